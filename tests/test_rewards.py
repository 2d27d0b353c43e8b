"""GRPO rewards: hand-computed literal cases for each reward, the registry, pickling, the total."""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from types import MappingProxyType

import pytest

from stepprune.rl.registry import PAPER_REWARDS, REWARDS, build_rewards
from stepprune.rl.rewards import (
    CorrectnessReward,
    LengthReward,
    SkipCountReward,
    SkipRatioReward,
    completion_text,
    skip_stats,
)


def skips(n: int) -> str:
    return "\n\n".join(["[SKIP]"] * n)


def steps(n: int) -> str:
    return "\n\n".join(f"Step {i}: 1 + {i} = {1 + i}." for i in range(n))


def thought(n_skip: int, n_kept: int, answer: str = "\\boxed{8}") -> str:
    body = "\n\n".join(p for p in (skips(n_skip), steps(n_kept)) if p)
    return f"<think>\n{body}\n</think>\n\n{answer}"


class WordTokenizer:
    """One token per whitespace-separated word; no special tokens."""

    all_special_tokens: list[str] = []

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": text.split()}


# ---- correctness -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion,gold,expected",
    [
        ("<think>\n3 + 5 = 8\n</think>\n\nThe answer is \\boxed{8}.", "8", 2.0),
        ("<think>\n3 + 5 = 8\n</think>\n\nThe answer is \\boxed{9}.", "8", 0.0),
        ("3 + 5 = 8\n</think>\n\\boxed{8}", "8", 2.0),  # the prompt opened <think>
        # No </think>: 0 even though the text ends in (and boxes) the right answer.
        ("<think>\n3 + 5 = 8, so \\boxed{8}", "8", 0.0),
        ("3 + 5 = 8", "8", 0.0),
        ("<think>\nx = 8\n</think>", "8", 0.0),  # closed but no answer after it
        # Only the answer part counts: the right number inside the thinking does not.
        ("<think>\nmaybe \\boxed{8}\n</think>\nso \\boxed{7}", "8", 0.0),
        ("", "8", 0.0),
    ],
)
def test_correctness_cases(completion, gold, expected):
    assert CorrectnessReward()(completions=[completion], gold_answer=[gold]) == [expected]


def test_correctness_conversational_options_and_missing_gold():
    reward = CorrectnessReward(reward=1.5, wrong=-0.5, answer_column="answer")
    conv = [
        [{"role": "assistant", "content": "<think>\nok\n</think>\n\\boxed{\\frac{1}{2}}"}],
        [{"role": "assistant", "content": "<think>\nok\n</think>\n\\boxed{2}"}],
        [{"role": "assistant", "content": "<think>\nok\n</think>\n\\boxed{2}"}],
    ]
    assert reward(prompts=["p"] * 3, completions=conv, answer=["0.5", "3", None]) == [
        1.5,
        -0.5,
        None,
    ]
    with pytest.raises(ValueError, match=r"no dataset column 'answer'.*\['gold_answer'\]"):
        reward(completions=["x"], gold_answer=["1"], log_metric=print)


# ---- skip ratio --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion,expected",
    [
        (thought(4, 1), 1.0),  # r = 4/5 = 0.8: exactly the upper edge
        (thought(8, 2), 1.0),  # 0.8 again
        (thought(7, 2), 0.5),  # 7/9 = 0.78 < 0.8
        (thought(3, 2), 0.5),  # 0.6
        (thought(1, 1), 0.5),  # r = 0.5: exactly the lower edge
        (thought(4, 5), 0.0),  # 4/9 = 0.44 < 0.5
        (thought(0, 3), 0.0),
        (thought(3, 0), 1.0),  # only [SKIP]s: r = 1
        ("<think>\n\n</think>\n\\boxed{8}", 0.0),  # zero steps: r undefined -> 0
        ("", 0.0),
        ("</think>[SKIP]\n\n[SKIP]", 0.0),  # skips after </think> are not thinking
        # No </think>: all of it is thinking, 2 skips + 1 kept step = 2/3.
        ("[SKIP]\n\n[SKIP]\n\nthen x = 2", 0.5),
        # Adjacent to text: [SKIP][SKIP] is 2 skips, "[SKIP] We add." 1 skip + 1 kept: 3/4.
        ("[SKIP][SKIP]\n\n[SKIP] We add.\n</think>\n1", 0.5),
        ("[SKIP]\n[SKIP]\n\n[SKIP][SKIP]\n\nWe add.\n</think>\n1", 1.0),  # 4/5
    ],
)
def test_skip_ratio_cases(completion, expected):
    assert SkipRatioReward()(completions=[completion]) == [expected]


def test_skip_stats_counts():
    assert skip_stats(thought(4, 1)).n_skip == 4
    assert skip_stats(thought(4, 1)).ratio == 0.8
    stats = skip_stats("<think>\n[SKIP] We add.\n\n\n\n[SKIP]\n\n  \n\nx\n</think>\n[SKIP]")
    assert (stats.n_skip, stats.n_kept) == (2, 2)
    assert skip_stats("<think>\n\n</think>").ratio is None


def test_skip_ratio_options_and_logged_metrics():
    reward = SkipRatioReward(high=3.0, high_at=0.9, mid=1.0, mid_at=0.25, low=-1.0)
    logged: list[tuple[str, float]] = []
    completions = [thought(9, 1), thought(8, 2), thought(1, 3), thought(1, 4), "</think> no steps"]
    out = reward(completions=completions, log_metric=lambda k, v: logged.append((k, v)))
    # r = 0.9, 0.8, 0.25, 0.2, undefined
    assert out == [3.0, 1.0, 1.0, -1.0, -1.0]
    metrics = dict(logged)
    assert metrics["skip/ratio"] == pytest.approx((0.9 + 0.8 + 0.25 + 0.2 + 0.0) / 5)
    assert metrics["skip/count"] == pytest.approx((9 + 8 + 1 + 1 + 0) / 5)
    assert metrics["skip/kept_steps"] == pytest.approx((1 + 2 + 3 + 4 + 0) / 5)
    with pytest.raises(ValueError, match="mid_at"):
        SkipRatioReward(mid_at=0.9, high_at=0.8)


@pytest.mark.parametrize(
    ("completion", "steps_ratio", "authors_r"),
    [
        # 2 skips, 2 kept steps; 3 blank lines: steps 2/4, authors 2/(3 + 2)
        ("<think>\nA\n\n[SKIP]\n\n[SKIP]\n\nB\n</think>\n1", 0.5, 0.4),
        # all skipped: steps 3/3; the blank lines between them count too: authors 3/(2 + 3)
        ("<think>\n[SKIP]\n\n[SKIP]\n\n[SKIP]\n</think>\n1", 1.0, 0.6),
        # "\n\n\n\n" is one step break, two "\n\n": steps 1/2, authors 1/(2 + 1)
        ("<think>\nA\n\n\n\n[SKIP]\n</think>\n1", 0.5, 1 / 3),
        # [SKIP]s after </think> are not thinking; none in it: 0 either way
        ("<think>\nA\n</think>\n[SKIP]\n\n[SKIP]", 0.0, 0.0),
        ("<think>\n\n</think>", None, 0.0),  # no steps; one blank line, no [SKIP]: 0/1
    ],
)
def test_skip_ratio_denominator_steps_or_the_authors(completion, steps_ratio, authors_r):
    from stepprune.rl.rewards import authors_ratio

    assert skip_stats(completion).ratio == steps_ratio
    assert authors_ratio(completion) == pytest.approx(authors_r)
    authors = SkipRatioReward(denominator="authors", high=2.0, mid=1.0, low=0.0)
    logged = {}
    out = authors(completions=[completion], log_metric=logged.__setitem__)
    assert out == [2.0 if authors_r >= 0.8 else 1.0 if authors_r >= 0.5 else 0.0]
    assert logged["skip/ratio"] == pytest.approx(authors_r)  # the ratio in use is logged
    with pytest.raises(ValueError, match="denominator 'blank'"):
        SkipRatioReward(denominator="blank")


# ---- skip count ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion,expected",
    [
        (thought(101, 2), -2.0),
        (thought(100, 2), 0.0),  # exactly the limit is allowed
        (thought(0, 2), 0.0),
        ("<think>\n" + skips(101), -2.0),  # cut off before </think>: all thinking
        ("<think>\nx\n</think>\n" + skips(101), 0.0),  # after </think>: not thinking
        ("<think>\n" + "[SKIP]" * 101 + "\n</think>\n1", -2.0),  # one paragraph of 101
        ("", 0.0),
    ],
)
def test_skip_count_cases(completion, expected):
    assert SkipCountReward()(completions=[completion]) == [expected]


def test_skip_count_options():
    reward = SkipCountReward(penalty=-5.0, max_skips=2)
    assert reward(completions=[thought(2, 1), thought(3, 1)]) == [0.0, -5.0]


# ---- length --------------------------------------------------------------------------------------


def test_length_from_completion_ids_edges():
    ids = [list(range(3500)), list(range(3501)), [], [7]]
    assert LengthReward()(completions=["a"] * 4, completion_ids=ids) == [0.0, -1.0, 0.0, 0.0]
    assert LengthReward(penalty=-3.0, max_tokens=0)(
        completions=["", "x"], completion_ids=[[], [1]]
    ) == [
        0.0,
        -3.0,
    ]


def test_length_from_tokenizer_or_error():
    reward = LengthReward(max_tokens=3, tokenizer=WordTokenizer())
    assert reward(completions=["a b c", "a b c d", ""]) == [0.0, -1.0, 0.0]
    with pytest.raises(ValueError, match="completion_ids.*or a tokenizer"):
        LengthReward()(completions=["a b c d"])


# ---- registry, pickling, special-token decoding ------------------------------------------------


def test_registry_names_and_build():
    assert list(PAPER_REWARDS) == ["correctness", "skip_ratio", "skip_count", "length"]
    assert list(REWARDS) == [
        *PAPER_REWARDS,
        *("eg_compress", "eg_format", "eg_answer", "eg_length"),
        *("ceeh_correctness", "ceeh_length"),
        *("kimi_length", "sb_correctness", "sb_length", "thinkprune", "soft_overlong"),
    ]
    built = build_rewards(PAPER_REWARDS, length={"max_tokens": 10})
    assert [r.__name__ for r in built] == list(PAPER_REWARDS)
    assert built[3].max_tokens == 10 and built[3].penalty == -1.0
    with pytest.raises(
        ValueError, match=r"unknown rewards \['brevity'\]; known: \['ceeh_correctness'"
    ):
        build_rewards(["correctness", "brevity"])
    with pytest.raises(ValueError, match="not in"):
        build_rewards(["correctness"], length={"max_tokens": 1})
    with pytest.raises(ValueError, match="bad options"):
        build_rewards(["length"], length={"max_tokenz": 1})
    assert isinstance(REWARDS, MappingProxyType)
    with pytest.raises(TypeError):
        REWARDS["brevity"] = LengthReward  # read-only: no caller can change the registry


@pytest.mark.parametrize("name", list(REWARDS))
def test_every_reward_pickles(name):
    required = {"soft_overlong": {"max_completion_len": 4, "soft_punish_cache": 2}}
    options = {name: required[name]} if name in required else {}
    reward = build_rewards([name], tokenizer=WordTokenizer(), **options)[0]
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == name and type(clone) is type(reward)
    kwargs = dict(completions=[thought(4, 1)], completion_ids=[[1, 2]], gold_answer=["8"])
    assert clone(**kwargs) == reward(**kwargs)


def test_special_skip_token_is_recovered_from_ids(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_special_tokens({"additional_special_tokens": ["[SKIP]"]})
    text = "<think>\n[SKIP]\n\n[SKIP]\n\n[SKIP]\n\n[SKIP]\n\n3 + 5 = 8\n</think>\n\\boxed{8}"
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    trl_text = tok.decode(ids, skip_special_tokens=True)  # what TRL hands the rewards
    assert "[SKIP]" not in trl_text
    assert SkipRatioReward()(completions=[trl_text]) == [0.0]
    for reward in (SkipRatioReward(tokenizer=tok), CorrectnessReward(tokenizer=tok)):
        conv = [[{"role": "assistant", "content": trl_text}]]
        assert reward(completions=conv, completion_ids=[ids], gold_answer=["8"]) == [
            1.0 if reward.name == "skip_ratio" else 2.0
        ]


def test_completion_text_forms():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "a"}]) == "a"
    blocks = [{"role": "assistant", "content": [{"type": "text", "text": "x"}, {"text": "y"}]}]
    assert completion_text(blocks) == "xy"
    assert completion_text([{"role": "tool", "content": "t"}, {"content": "z"}]) == "z"


# ---- the four rewards together -------------------------------------------------------------------


def total_rewards(rewards, weights: Sequence[float] | None, completions, **call_kwargs):
    """Per-completion weighted sum, as TRL forms it: None counts 0; all None gives NaN."""
    weights = [1.0] * len(rewards) if weights is None else list(weights)
    assert len(weights) == len(rewards)
    columns = [r(completions=completions, **call_kwargs) for r in rewards]
    totals = []
    for row in zip(*columns, strict=True):
        if all(v is None for v in row):
            totals.append(math.nan)
            continue
        totals.append(sum(w * v for w, v in zip(weights, row, strict=True) if v is not None))
    return totals


def test_four_rewards_total_matches_hand_computation():
    rewards = build_rewards(PAPER_REWARDS)
    completions = [
        thought(4, 1),  # correct (+2), r = 0.8 (+1), 4 skips, 10 tokens
        "<think>\n" + skips(101) + "\n\n7",  # no </think>: 0; r = 101/102 (+1); -2; 3501: -1
        "<think>\na\n\nb\n\nc\n</think>\n\\boxed{7}",  # wrong, r = 0, no penalties
        thought(1, 1, "\\boxed{3}"),  # gold missing: correctness None; r = 0.5 (+0.5)
    ]
    columns = dict(
        completion_ids=[[0] * 10, [0] * 3501, [0] * 5, [0] * 3600],
        gold_answer=["8", "7", "8", None],
    )
    assert total_rewards(rewards, None, completions, **columns) == [3.0, -2.0, 0.0, -0.5]
    weights = [1.0, 0.5, 1.0, 2.0]
    assert total_rewards(rewards, weights, completions, **columns) == [2.5, -3.5, 0.0, -1.75]
    only_correctness = total_rewards(rewards[:1], [1.0], completions, **columns)
    assert only_correctness[:3] == [2.0, 0.0, 0.0] and math.isnan(only_correctness[3])
