"""The RL layer's extension points: what a method may change in a GRPO step, and what it sees.

A method (EG, CEEH, ...) is a list of ``Extension`` objects handed to ``rl.trainer.RLTrainer``.
Each hook has a do-nothing default, so an extension overrides only what it changes:

- ``on_rewards(batch)``: after every process's rewards are gathered and before TRL turns them
  into advantages. It may fill or edit reward columns that need the whole group (CEEH's length
  reward), set per-rollout flags for the loss (``batch.flags["hard"]``), and update per-question
  state. It sees the state from before this step's update, which it applies last.
- ``advantages(batch)``: the advantage of every rollout (global order), replacing TRL's
  group-normalised one; None keeps TRL's. At most one extension may return one.
- ``loss_rollouts(batch)``: which rollouts count in the loss normaliser (None: all).
- ``token_advantages(advantages, entropies, inputs, progress)``: per-token advantages (B, T)
  from the current forward pass's entropies; None keeps the sequence-level ones.
- ``extra_loss(entropies, mask, inputs, progress, normaliser)``: a term added to TRL's loss.
- ``state_dict()`` / ``load_state_dict()``: JSON-able state saved in every checkpoint.

Everything in a ``RolloutBatch`` is gathered from all processes, in TRL's order (the rollouts of
one prompt are consecutive), so every rank computes the same state from the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RolloutBatch:
    """One generation batch, gathered from every process (N rollouts, F reward functions)."""

    question_ids: list[str]
    rewards_per_func: Any  # torch.Tensor [N, F], NaN where a reward does not apply
    reward_names: list[str]
    reward_weights: Any  # torch.Tensor [F]
    lengths: Any  # torch.Tensor [N], completion tokens (EOS included)
    finished: Any  # torch.Tensor [N] bool: the completion ended with an EOS token
    num_generations: int
    step: int  # optimizer steps done before this batch (trainer_state.global_step)
    max_steps: int
    training: bool = True  # False in TRL's eval loop: state must not change there
    flags: dict[str, Any] = field(default_factory=dict)  # name -> torch.Tensor [N], to the loss
    metrics: dict[str, float] = field(default_factory=dict)  # logged for this step

    def column(self, name: str):
        """The reward column of the reward function called ``name``."""
        if name not in self.reward_names:
            raise KeyError(f"no reward {name!r} in this run's rewards {self.reward_names}")
        return self.rewards_per_func[:, self.reward_names.index(name)]

    def total_rewards(self):
        """Weighted sum over reward functions, as TRL sums them (NaN parts ignored)."""
        weighted = self.rewards_per_func * self.reward_weights.unsqueeze(0)
        return weighted.nansum(dim=1)

    @property
    def progress(self) -> float:
        """Fraction of training done, t / T in [0, 1]."""
        return min(1.0, self.step / self.max_steps) if self.max_steps > 0 else 0.0


class Extension:
    """Base of the method extensions: every hook does nothing."""

    name = "extension"

    def on_rewards(self, batch: RolloutBatch) -> None:
        return None

    def advantages(self, batch: RolloutBatch):
        return None

    def loss_rollouts(self, batch: RolloutBatch):
        return None

    def token_advantages(self, advantages, entropies, inputs: dict, progress: float):
        return None

    def extra_loss(self, entropies, mask, inputs: dict, progress: float, normaliser):
        return None

    def loss_metrics(self, entropies, mask, inputs: dict) -> dict[str, tuple]:
        """name -> (sum, count) over this micro-batch's tokens, reduced over ranks and logged."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None

    def __repr__(self) -> str:
        options = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in options.items())})"
