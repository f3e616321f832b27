"""Shared library code of the virality-caffe reproduction.

Pure-numpy cores (loss math, pair sampling, metrics), net and solver generators,
and dataset adapters. Tools under ``tools/`` and Caffe layers under
``python_layers/`` are thin entry points and adapters around this package.
"""
