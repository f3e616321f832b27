"""Load any dataset by name: ``load_dataset(name, data_dir=None, images=None, **options)``.

| name         | data_dir (default)                  | adapter                                 |
| ------------ | ----------------------------------- | --------------------------------------- |
| deza2015     | datasets/deza2015 (shipped)         | :mod:`virality.datasets.deza2015`       |
| popularity   | required: image,user,score table    | :mod:`virality.datasets.popularity`     |
| scores-csv   | required: image,score[,topic,user]  | :func:`virality.datasets.csvs.load_scores_csv` |
| pairs-csv    | required: image_a,image_b,label     | :func:`virality.datasets.csvs.load_pairs_csv`  |
| synthetic    | data/synthetic/raw (generated)      | :func:`virality.datasets.csvs.load_synthetic`  |

``options`` are passed to the adapter (e.g. ``verify=False`` for deza2015,
``seed=1`` for the csv tables); an option the adapter does not take is an error
that lists the ones it does. docs/DATASETS.md describes each on-disk form.
"""
import inspect

from virality.datasets import csvs, deza2015, popularity
from virality.paths import DATA_DIR

LOADERS = {
    "deza2015": deza2015.load,
    "popularity": popularity.load,
    "scores-csv": csvs.load_scores_csv,
    "pairs-csv": csvs.load_pairs_csv,
    "synthetic": csvs.load_synthetic,
}
DEFAULT_DATA_DIRS = {
    "deza2015": deza2015.DEFAULT_DIR,
    "synthetic": DATA_DIR / "synthetic" / "raw",
}
#: the setting tools use when none is named.
DEFAULT_SETTINGS = {
    "deza2015": "random",
    "popularity": "user_mix",
    "scores-csv": "random",
    "pairs-csv": "random",
    "synthetic": "random",
}
#: loader arguments that are not user options.
_FIXED = {"data_dir", "images"}


def dataset_names():
    """The names load_dataset accepts."""
    return sorted(LOADERS)


def _loader(name):
    try:
        return LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset '{name}'; datasets: {', '.join(dataset_names())}") from None


def dataset_options(name):
    """The options (keyword -> default) the dataset's adapter takes."""
    if name == "synthetic":   # a scores-csv with its own name, flag and table
        return {k: v for k, v in dataset_options("scores-csv").items() if k != "table"}
    params = inspect.signature(_loader(name)).parameters
    return {k: p.default for k, p in params.items()
            if k not in _FIXED and p.kind is p.POSITIONAL_OR_KEYWORD and k not in ("name", "synthetic")}


def default_setting(name):
    """The setting tools use for ``name`` when none is given."""
    _loader(name)
    return DEFAULT_SETTINGS[name]


def load_dataset(name, data_dir=None, images=None, **options):
    """The :class:`~virality.datasets.base.Dataset` called ``name``.

    data_dir: the dataset's files (a directory or, for table datasets, the table
              itself); defaults exist for deza2015 and synthetic only.
    images:   the image directory (default: the adapter's, see docs/DATASETS.md).
    """
    loader = _loader(name)
    allowed = dataset_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"dataset '{name}' takes no option {', '.join(unknown)}; "
                         f"options: {', '.join(sorted(allowed)) or 'none'}")
    if data_dir is None:
        data_dir = DEFAULT_DATA_DIRS.get(name)
        if data_dir is None:
            raise ValueError(f"dataset '{name}' needs data_dir (--data-dir): its table, or the directory "
                             f"holding it (docs/DATASETS.md)")
    return loader(data_dir, images=images, **options)
