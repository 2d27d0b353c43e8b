"""Training data and cards: the [SKIP] token, SFT rows and cards, GRPO problems."""
