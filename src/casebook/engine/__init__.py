"""The training engine every task family shares: runtime (device, seeds, mixed
precision, threads), optimizer and schedule, checkpoints, the epoch loop with the
hooks a family fills, data-parallel training and the augmentation policy.

Nothing here knows what a family predicts: a family hands the loop its network,
data and per-epoch work (casebook.engine.loop.Trainer)."""
