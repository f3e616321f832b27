"""Experiments as run directories: runs, plans (Table 1, the demo), evaluation and its metrics."""
