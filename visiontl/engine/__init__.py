"""The training engine: one loop for every task, checkpoints, logs, seeding."""
