"""The RL layer: rewards (and, as they arrive, the trainer hooks and methods)."""
