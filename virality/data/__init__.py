"""Data for training: the image store, pair sampling, D_train/D_val/D_test, the pair feeds, the synthetic world."""
