"""Dataset adapters behind one interface (:mod:`virality.datasets.base`)."""
from virality.datasets.base import Dataset, Setting  # noqa: F401
