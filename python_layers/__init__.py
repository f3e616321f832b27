"""Caffe Python layers of the project (thin adapters over :mod:`virality`).

Use from a prototxt as ``python_param { module: "python_layers.<module>" layer: "<Class>" }``;
``.venv/bin/caffe`` and ``.venv/bin/python`` both find this package.
"""
