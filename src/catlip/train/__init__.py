"""The trainer: one loop for every method, atomic resumable checkpoints, logging, distributed set-up."""
