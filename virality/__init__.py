"""Shared library code of the virality-caffe reproduction.

Tools under ``tools/`` and Caffe layers under ``python_layers/`` are thin entry points and
adapters around this package. Its subpackages, in the order data flows through them:

- ``datasets``: adapters that read a dataset (Deza & Parikh 2015, popularity tables, CSVs) into one interface.
- ``data``: the image store, D_train/D_val/D_test, training-pair sampling, the pair feeds, the synthetic world.
- ``model``: tower architectures, generated train/deploy nets and solvers, the ranking loss (Eqs. 1-4).
- ``pretrained``: Model Zoo manifests, verified downloads, .caffemodel files, loading weights and proving it.
- ``train``: the pycaffe training driver, preflight checks, staged snapshots, multi-GPU through NCCL.
- ``experiments``: run directories, plans of runs (Table 1, the demo), evaluation and its metrics.
- ``deploy``: releases of trained models, deploy-net input, prediction, nearest neighbours.
- ``report``: what a person reads: HTML pages and figures.

Beside them, small helpers every layer uses: ``paths`` (the project root), ``files`` (atomic
writes, checked reads), ``outputs`` (certified stamps, one writer per directory), ``console``
(Caffe's log) and ``progress`` (progress bars).
"""
