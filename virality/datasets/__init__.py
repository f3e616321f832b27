"""Dataset adapters behind one interface (:mod:`virality.datasets.base`)."""
from virality.datasets.base import Dataset, Setting  # noqa: F401
from virality.datasets.registry import load_dataset  # noqa: F401,E402
