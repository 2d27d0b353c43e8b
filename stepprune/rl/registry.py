"""The reward registry: recipe names -> reward classes, and ``build_rewards``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from stepprune.rl import ceeh, eg, length_rewards, rewards

# Read-only: a caller adding or replacing an entry would change every later build_rewards.
REWARDS: Mapping[str, type[rewards.Reward]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (
            rewards.CorrectnessReward,
            rewards.SkipRatioReward,
            rewards.SkipCountReward,
            rewards.LengthReward,
            eg.CompressReward,
            eg.FormatReward,
            eg.AnswerReward,
            eg.LengthDecayReward,
            ceeh.CorrectnessReward,
            ceeh.LengthReward,
            length_rewards.KimiLengthReward,
            length_rewards.ShorterBetterCorrectness,
            length_rewards.ShorterBetterLengthReward,
            length_rewards.ThinkPruneReward,
            length_rewards.SoftOverlongReward,
        )
    }
)
PAPER_REWARDS = ("correctness", "skip_ratio", "skip_count", "length")


def build_rewards(
    names: Sequence[str], tokenizer=None, stop_ids=None, **options: dict
) -> list[rewards.Reward]:
    """Instances of the named rewards; ``options[name]`` holds that reward's keyword arguments;
    ``stop_ids`` (the model's end-of-sequence ids) lets rewards tell cut-off rollouts."""
    unknown = [n for n in [*names, *options] if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown rewards {unknown}; known: {sorted(REWARDS)}")
    stray = sorted(set(options) - set(names))
    if stray:
        raise ValueError(f"reward options given for {stray}, which are not in {list(names)}")
    built = []
    for name in names:
        kwargs = dict(options.get(name) or {})
        try:
            reward = REWARDS[name](tokenizer=tokenizer, **kwargs)
        except TypeError as e:
            raise ValueError(f"reward {name!r}: bad options {sorted(kwargs)} ({e})") from e
        if stop_ids is not None:
            reward.stop_ids = frozenset(stop_ids)
        built.append(reward)
    return built
