"""EG (arXiv 2511.14258): every formula against hand values, the rewards' reading of rollouts, the
config refusals, and both stages on the tiny model, killed and resumed in each stage."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_ARGS, biased_copy
from killhook import killed_after

from stepprune.rl.eg import CompressReward, LengthDecayReward, length_shape
from stepprune.rl.registry import build_rewards
from stepprune.stages.grpo import GRPOStageConfig, run

STOP = 99
L = 8


def test_lambda_and_the_three_shapes_by_hand():
    # lambda = -ln(r) / L: with r = 0.5 and L = 4096, f(1024) = 0.5 ** (1/4)
    assert length_shape(1024, 4096, 0.5) == pytest.approx(0.840896415)
    assert length_shape(4096, 4096, 0.5) == pytest.approx(0.5)
    assert length_shape(0, 4096, 0.3, "exp") == 1.0
    assert length_shape(2048, 4096, 0.5, "linear") == pytest.approx(0.75)
    assert length_shape(4096, 4096, 0.2, "linear") == pytest.approx(0.2)
    assert length_shape(2048, 4096, 0.5, "cosine") == pytest.approx(0.75)
    assert length_shape(1024, 4096, 0.5, "cosine") == pytest.approx(0.5 + 0.25 * (1 + 0.7071068))
    assert length_shape(4096, 4096, 0.2, "cosine") == pytest.approx(0.2)


def ids(n: int, finished: bool = True) -> list[int]:
    return [5] * (n - 1) + [STOP if finished else 6]


def compress(texts, lengths, finished=None, gold="8", **options):
    reward = CompressReward(max_tokens=L, r=0.5, **options)
    reward.stop_ids = frozenset({STOP})
    finished = finished or [True] * len(texts)
    completion_ids = [ids(n, f) for n, f in zip(lengths, finished, strict=True)]
    logged = {}
    values = reward(
        completions=texts,
        completion_ids=completion_ids,
        gold_answer=[gold] * len(texts),
        log_metric=logged.__setitem__,
    )
    return values, logged


def test_compress_clip_at_l_and_l_plus_one():
    good = "<think>\n3 + 5 = 8\n</think>\n\\boxed{8}"
    values, logged = compress([good] * 4, [4, L, L + 1, L], finished=[True, True, True, False])
    assert values[0] == pytest.approx(0.5 ** (4 / L))
    assert values[1] == pytest.approx(0.5)  # |y| = L: f(L) = r
    assert values[2] == 0.0  # |y| = L + 1: clipped
    assert values[3] == 0.0  # cut off before EOS: no final answer
    assert logged == {"eg/frac_clipped": 0.5, "eg/frac_correct": 0.75}


def test_compress_reads_the_final_answer():
    wrong = "<think>\nx\n</think>\n\\boxed{7}"
    unclosed = "<think>\n3 + 5 = 8, so \\boxed{8}"
    no_box = "<think>\nx\n</think>\nThe answer is 8."
    values, _ = compress([wrong, unclosed, no_box], [3, 3, 3])
    assert values == [0.0, 0.0, 0.0]
    plain = "3 + 5 = 8.\n\nSo the answer is \\boxed{8}."
    assert compress([plain], [5], require_think=False)[0] == [pytest.approx(0.5 ** (5 / L))]
    assert compress([plain], [5])[0] == [0.0]  # an instruct answer under require_think


def test_explore_length_decay_stepwise_and_linear():
    step = LengthDecayReward(max_tokens=4096)
    assert [step.value(n) for n in (4000, 4096, 4097, 5096, 5097, 6596)] == [
        0.0,
        0.0,
        -0.25,
        -0.25,
        -0.5,
        -0.75,
    ]
    linear = LengthDecayReward(max_tokens=4096, decay="linear")
    assert linear.value(4097) == pytest.approx(-0.00025)
    assert linear.value(5096) == pytest.approx(-0.25)
    assert linear.value(6596) == pytest.approx(-0.625)
    assert LengthDecayReward(max_tokens=4096, floor=-0.5).value(9000) == -0.5


def test_explore_format_and_answer_rewards():
    texts = ["<think>\na\n</think>\n\\boxed{3}", "<think>\na\n\\boxed{3}", "\\boxed{4}"]
    rewards = build_rewards(["eg_format", "eg_answer"], stop_ids={STOP})
    completion_ids = [ids(3), ids(3), ids(3, finished=False)]
    call = dict(completions=texts, completion_ids=completion_ids, gold_answer=["3"] * 3)
    assert [r(**call) for r in rewards] == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    loose = build_rewards(
        ["eg_format"], stop_ids={STOP}, eg_format={"require_think": False, "value": 0.5}
    )[0]
    assert loose(**{**call, "completion_ids": [ids(3)] * 3}) == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"reward_kwargs": {"eg_compress": {"r": 1.0}}}, r"r must lie in \(0, 1\)"),
        ({"reward_kwargs": {"eg_compress": {"r": 0.0}}}, r"r must lie in \(0, 1\)"),
        ({"reward_kwargs": {"eg_compress": {"max_tokens": 0}}}, "must be > 0"),
        ({"reward_kwargs": {"eg_compress": {"shape": "cubic"}}}, "unknown shape 'cubic'"),
        ({"method_kwargs": {"positive_absolute": {"scale": 0}}}, "scale"),
        ({"method_kwargs": {"ceeh": {}}}, r"method_kwargs for \['ceeh'\]"),
    ],
)
def test_bad_eg_options_fail_before_training(
    tiny_model_dir, data_dir, tmp_path, overrides, message
):
    out = tmp_path / "out"
    cfg = GRPOStageConfig(
        problems="mawps_singleop",
        data_dir=str(data_dir),  # STEPPRUNE_DATA_DIR, else ../shared/data/math (conftest)
        model=str(tiny_model_dir),
        out=str(out),
        method="eg-compress",
        limit=4,
        grpo_args={**TINY_ARGS, "max_steps": 1},
        **overrides,
    )
    with pytest.raises(ValueError, match=message):
        run(cfg)
    assert not out.exists()


def test_unknown_method_order_and_explore_without_a_model(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'eg-fast'; known: se, eg-compress"):
        GRPOStageConfig(method="eg-fast")
    with pytest.raises(ValueError, match="a permutation of"):
        GRPOStageConfig(method="eg", order=["eg-compress", "eg-compress"])
    with pytest.raises(ValueError, match="apply to sequences"):
        GRPOStageConfig(method="ceeh", order=["ceeh"])
    with pytest.raises(ValueError, match="eg-explore starts from the compress stage's model"):
        run(GRPOStageConfig(method="eg-explore", out=str(tmp_path / "x")))
    assert not (tmp_path / "x").exists()


def test_resume_checks_every_stage_before_any_stage_runs(tmp_path):
    """A resume whose explore settings differ is refused before compress trains on."""
    from stepprune.rl.record import effective_config, write_record
    from stepprune.rl.sequence import run_sequence, stage_configs

    out = tmp_path / "eg"
    old = GRPOStageConfig(method="eg", out=str(out), model="m")
    write_record(out, dataclasses.asdict(old))
    for stage in stage_configs(old):  # both stages started, neither finished
        write_record(Path(stage.out), effective_config(stage))
    explore = {"eg-explore": {"reward_kwargs": {"eg_length": {"rate": 0.5}}}}
    new = dataclasses.replace(old, resume=True, stages=explore)

    def run_single(stage):
        raise AssertionError(f"{stage.method} ran")

    with pytest.raises(ValueError, match=r"eg-explore holds a run made with other settings "):
        run_sequence(new, run_single)
    with pytest.raises(ValueError, match=r"\(reward_kwargs\.eg_length\.rate: 0\.25 -> 0\.5\)"):
        run_sequence(new, run_single)


# ---- both stages on the tiny model, killed and resumed --------------------------------------


def _cli(model: Path, problems: Path, out: Path, *extra: str) -> list[str]:
    args = {**TINY_ARGS, "max_steps": 3, "report_to": "none"}
    kwargs = {"eg_compress": {"max_tokens": 12, "require_think": False}}
    kwargs["eg_format"] = kwargs["eg_answer"] = {"require_think": False}
    kwargs["eg_length"] = {"max_tokens": 12}
    stages = {
        "eg-compress": {"reward_kwargs": {"eg_compress": kwargs["eg_compress"]}},
        "eg-explore": {"reward_kwargs": {k: kwargs[k] for k in ("eg_format", "eg_answer")}},
    }
    stages["eg-explore"]["reward_kwargs"]["eg_length"] = kwargs["eg_length"]
    return [
        *(sys.executable, "-m", "stepprune.cli", "grpo", "--method", "eg"),
        *("--model", str(model), "--problems", str(problems), "--out", str(out)),
        *("--set", f"grpo_args={json.dumps(args)}", "--set", f"stages={json.dumps(stages)}"),
        *extra,
    ]


@pytest.mark.slow
def test_both_stages_chain_and_resume_after_a_kill_in_each(tiny_model_dir, tmp_path):
    """Every run passes --overwrite, as a recipe with ``overwrite: true`` does, and the reruns
    add --resume: resume must win, keeping compress's checkpoint, log and summary."""
    model = biased_copy(tiny_model_dir, tmp_path / "model")
    problems = tmp_path / "p.jsonl"
    problems.write_text(
        "".join(json.dumps({"problem": f"{i} apples?", "answer": str(i)}) + "\n" for i in range(8))
    )
    out = tmp_path / "eg"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "stderr.log"  # read back when a run dies early
    killed_after(
        out / "eg-compress" / "checkpoint-1", _cli(model, problems, out, "--overwrite"), env, log
    )
    assert not (out / "eg-compress" / "summary.json").exists()
    assert not (out / "eg-compress" / "checkpoint-2").exists()
    resume = _cli(model, problems, out, "--overwrite", "--resume")
    killed_after(out / "eg-explore" / "checkpoint-1", resume, env, log)
    assert not (out / "eg-explore" / "checkpoint-2").exists()
    compress_done = json.loads((out / "eg-compress" / "summary.json").read_text())
    assert compress_done["resumed_from"].endswith("checkpoint-1")
    compress_files = {
        name: (out / "eg-compress" / name).read_bytes()
        for name in ("log_history.jsonl", "summary.json")
    }
    done = subprocess.run(
        _cli(model, problems, out, "--overwrite", "--resume"), env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    for name, content in compress_files.items():  # the finished stage was skipped, not rerun
        assert (out / "eg-compress" / name).read_bytes() == content
    summary = json.loads((out / "summary.json").read_text())
    assert summary["order"] == ["eg-compress", "eg-explore"]
    explore = summary["stages"]["eg-explore"]
    assert explore["global_step"] == 3 and explore["resumed_from"].endswith("checkpoint-1")
    config = json.loads((out / "eg-explore" / "stepprune_config.json").read_text())
    assert config["model"] == str(out / "eg-compress")  # explore starts from compress's model
    assert config["reward_funcs"] == ["eg_format", "eg_answer", "eg_length"]
    compress_cfg = json.loads((out / "eg-compress" / "stepprune_config.json").read_text())
    assert compress_cfg["grpo_args"]["temperature"] == TINY_ARGS["temperature"]  # recipe wins
    history = [json.loads(x) for x in (out / "eg-compress" / "log_history.jsonl").open()]
    steps = [h for h in history if "reward" in h]
    assert [h["step"] for h in steps] == [1, 2, 3]
    assert all(math.isfinite(h["eg/frac_positive"]) for h in steps)
    assert (out / "stages.png").stat().st_size > 1000
