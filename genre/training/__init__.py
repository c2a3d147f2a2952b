"""Training: the loop (`train_one_epoch`, `evaluate`), schedules, checkpoints and the `train` stage."""
