"""The project root and the standard places under it, resolved once, never from the cwd."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOTXT_DIR = ROOT / "prototxt"
SOLVER_DIR = ROOT / "solvers"
DATA_DIR = ROOT / "data"
MODELS_DIR = ROOT / "models"
DEMO_DIR = ROOT / "demo"
