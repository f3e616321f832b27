"""Training: the pycaffe driver, its preflight checks, staged snapshots, multi-GPU through NCCL."""
