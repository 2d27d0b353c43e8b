"""The grpo stage: config pass-through and refusals, a tiny real GRPO run, resuming."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
from conftest import TINY_ARGS, biased_copy

from stepprune.stages.grpo import GRPOStageConfig, grpo_config, run


@pytest.fixture(scope="module")
def eos_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return biased_copy(tiny_model_dir, tmp_path_factory.mktemp("eos-qwen2"))


@pytest.fixture
def problems_file(tmp_path) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_text(
        "".join(json.dumps({"problem": f"{i} apples?", "answer": str(i)}) + "\n" for i in range(8))
    )
    return path


def tiny_config(model_dir, problems, out, max_steps, **overrides) -> GRPOStageConfig:
    settings = dict(
        problems=str(problems),
        model=str(model_dir),
        out=str(out),
        reward_funcs=["length", "skip_ratio"],
        reward_weights=[1.0, 0.5],
        reward_kwargs={"length": {"max_tokens": 8}},
        grpo_args={**TINY_ARGS, "max_steps": max_steps},
    )
    settings.update(overrides)
    return GRPOStageConfig(**settings)


def read_history(out: Path) -> list[dict]:
    lines = (out / "log_history.jsonl").read_text().splitlines()
    return [h for h in map(json.loads, lines) if "reward" in h]


def load_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def regraded_correctness(out: Path) -> dict[int, list[tuple[float, float]]]:
    """Step -> [(logged correctness, ``CorrectnessReward`` on the logged completion and the gold
    of its problem "{i} apples?")] over the completions TRL logged (``log_completions``)."""
    import pandas as pd

    from stepprune.rl.rewards import CorrectnessReward, completion_text

    grader, pairs = CorrectnessReward(wrong=-0.25), {}
    for path in sorted((out / "completions").glob("completions_*.parquet")):
        for _, r in pd.read_parquet(path).iterrows():
            gold = re.search(r"(\d+) apples\?", r["prompt"][-1]["content"]).group(1)
            text = completion_text(list(r["completion"]))
            regraded = grader(completions=[text], gold_answer=[gold])[0]
            pairs.setdefault(int(r["step"]), []).append((r["correctness"], regraded))
    return pairs


def test_tiny_grpo_run_changes_parameters_and_logs_every_part(
    eos_model_dir, problems_file, tmp_path
):
    import torch

    out = tmp_path / "grpo"
    weights = {"length": 1.0, "skip_ratio": 0.5, "correctness": 1.0}
    # wrong=-0.25: a graded completion is told apart from a row whose gold never arrived (None)
    options = {"length": {"max_tokens": 8}, "correctness": {"wrong": -0.25}}
    cfg = tiny_config(eos_model_dir, problems_file, out, max_steps=3, reward_kwargs=options)
    cfg.reward_funcs, cfg.reward_weights = list(weights), list(weights.values())
    cfg.grpo_args["log_completions"] = True  # TRL writes completions/*.parquet with rewards
    summary = run(cfg)
    history = read_history(out)
    assert [h["step"] for h in history] == [1, 2, 3]
    # The run had a learning signal: some group's length rewards differed.
    assert max(h["rewards/length/std"] for h in history) > 0
    # The gold_answer column reached the correctness reward through TRL: what it logged is
    # what the grader gives on the logged completions.
    graded = regraded_correctness(out)
    assert sorted(graded) == [1, 2, 3]
    for h in history:
        logged, expected = zip(*graded[h["step"]], strict=True)
        assert list(logged) == list(expected) and len(logged) == 4
        assert math.isfinite(h["rewards/correctness/mean"])
        assert h["rewards/correctness/mean"] == pytest.approx(sum(expected) / len(expected))
        assert -1.0 <= h["rewards/length/mean"] <= 0.0
        total = sum(w * h[f"rewards/{name}/mean"] for name, w in weights.items())
        assert h["reward"] == pytest.approx(total, abs=1e-6)
        assert 1 <= h["completions/mean_length"] <= 16
        assert h["skip/ratio"] == 0.0 and h["entropy"] > 0
    before, after = load_weights(eos_model_dir), load_weights(out)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) >= len(before) // 2
    assert summary["global_step"] == 3 and summary["resumed_from"] is None
    assert summary["last"]["reward"] == pytest.approx(history[-1]["reward"])
    assert set(summary["rewards"]) == {"length", "skip_ratio", "correctness"}
    card = (out / "README.md").read_text()
    assert "| length | 1.0 | `LengthReward(penalty=-1.0, max_tokens=8)` |" in card
    assert "| num_generations | 4 |" in card and "`--method se`" in card
    assert (out / "reward_curve.png").stat().st_size > 1000
    saved = json.loads((out / "stepprune_config.json").read_text())
    assert saved["reward_weights"] == [1.0, 0.5, 1.0]


def test_resume_continues_from_the_last_checkpoint(eos_model_dir, problems_file, tmp_path):
    out = tmp_path / "grpo"
    run(tiny_config(eos_model_dir, problems_file, out, max_steps=2))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(tiny_config(eos_model_dir, problems_file, out, max_steps=3))
    summary = run(tiny_config(eos_model_dir, problems_file, out, max_steps=3, resume=True))
    assert Path(summary["resumed_from"]).name == "checkpoint-2"
    assert summary["global_step"] == 3
    assert [h["step"] for h in read_history(out)] == [1, 2, 3]
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    # --resume on a directory with files but no checkpoint: refused, nothing deleted
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a run")
    with pytest.raises(FileExistsError, match="--resume: .* holds files but no checkpoint"):
        run(tiny_config(eos_model_dir, problems_file, other, max_steps=1, resume=True))
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    # ... but a run killed before its first checkpoint left only its log: it starts again
    early = tmp_path / "early"
    early.mkdir()
    (early / "log_history.jsonl").write_text(json.dumps({"reward": 9.0, "step": 1}) + "\n")
    summary = run(tiny_config(eos_model_dir, problems_file, early, max_steps=1, resume=True))
    assert summary["resumed_from"] is None
    assert [h["reward"] for h in read_history(early)] != [9.0]
    assert len(read_history(early)) == 1


def test_resume_refuses_another_method_or_other_rewards(
    eos_model_dir, problems_file, tmp_path, monkeypatch
):
    """A run killed after its checkpoint but before its final outputs, then resumed with another
    method or other rewards: refused, naming old and new values, with nothing changed."""
    from stepprune.stages import grpo

    out = tmp_path / "grpo"
    with monkeypatch.context() as m:
        m.setattr(grpo, "_write_outputs", lambda *args: None)  # the kill: no final outputs
        run(tiny_config(eos_model_dir, problems_file, out, max_steps=1))
    assert not (out / "summary.json").exists() and (out / "checkpoint-1").is_dir()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    refused = [
        (
            dict(method="ceeh", reward_funcs=None, reward_weights=None, reward_kwargs={}),
            "method: 'se' -> 'ceeh'",
        ),
        (dict(reward_weights=[1.0, 1.0]), "reward_weights: [1.0, 0.5] -> [1.0, 1.0]"),
        (dict(reward_kwargs={"length": {"max_tokens": 9}}), "length.max_tokens: 8 -> 9"),
        (dict(reward_funcs=["skip_ratio", "length"]), "reward_funcs: ['length', 'skip_ratio']"),
    ]
    for overrides, message in refused:
        cfg = tiny_config(eos_model_dir, problems_file, out, 2, resume=True, **overrides)
        with pytest.raises(ValueError, match=re.escape(message)):
            run(cfg)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    summary = run(tiny_config(eos_model_dir, problems_file, out, max_steps=2, resume=True))
    assert Path(summary["resumed_from"]).name == "checkpoint-1" and summary["global_step"] == 2


def test_resume_refuses_other_extension_options(tmp_path):
    """The extensions' options, defaults filled in, are part of what a resume must keep."""
    from stepprune.rl.record import check_resume, identity, write_record

    old = GRPOStageConfig(method="ceeh", out=str(tmp_path))
    write_record(tmp_path, dataclasses.asdict(old))
    spelled_out = dataclasses.replace(old, method_kwargs={"ceeh": {"mode": "me", "coef": 0.001}})
    check_resume(tmp_path, dataclasses.asdict(spelled_out))  # the defaults, written out: same
    other = dataclasses.replace(old, method_kwargs={"ceeh": {"coef": 0.01}})
    with pytest.raises(ValueError, match=r"\(extensions\.ceeh\.coef: 0\.001 -> 0\.01\)"):
        check_resume(tmp_path, dataclasses.asdict(other))
    assert identity(dataclasses.asdict(old))["extensions"]["ceeh"]["mode"] == "me"
    eg = GRPOStageConfig(method="eg", out=str(tmp_path))
    with pytest.raises(ValueError, match=r"method: 'ceeh' -> 'eg'"):
        check_resume(tmp_path, dataclasses.asdict(eg))


def test_special_skip_token_reaches_the_rewards(tiny_model_dir, problems_file, tmp_path):
    """TRL decodes with skip_special_tokens=True, which deletes a special [SKIP]; the stage
    hands the rewards its tokenizer so that they count [SKIP] from the token ids."""
    from transformers import AutoTokenizer

    model = biased_copy(tiny_model_dir, tmp_path / "skip-qwen2", add_skip=True)
    assert "[SKIP]" in AutoTokenizer.from_pretrained(model).all_special_tokens
    out = tmp_path / "grpo"
    no_save = {**TINY_ARGS, "max_steps": 1, "save_steps": 10}
    run(tiny_config(model, problems_file, out, max_steps=1, grpo_args=no_save))
    (step,) = read_history(out)
    assert step["skip/count"] >= 0.5  # [SKIP]s per completion; 0 if the rewards lost them


def test_a_problem_quoting_skip_reaches_the_model_as_text(tiny_model_dir, tmp_path):
    """With an SFT model's tokenizer ([SKIP] a special token), a problem quoting "[SKIP]" is
    encoded as the base model read it; any other prompt gets exactly TRL's ids."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from stepprune.rl.registry import build_rewards
    from stepprune.rl.trainer import RLTrainer

    model = biased_copy(tiny_model_dir, tmp_path / "skip-qwen2", add_skip=True)
    tok = AutoTokenizer.from_pretrained(model)
    skip = tok.convert_tokens_to_ids("[SKIP]")
    quoted = [[{"role": "user", "content": "What does [SKIP] mean in 3 [SKIP] 4?"}]]
    plain = [[{"role": "user", "content": "3 apples?"}], [{"role": "user", "content": "x"}]]
    trainer = RLTrainer(
        model=str(model),
        reward_funcs=build_rewards(["length"]),
        args=GRPOConfig(output_dir=str(tmp_path / "o"), **TINY_ARGS),
        train_dataset=Dataset.from_list([{"prompt": p} for p in plain]),
        processing_class=tok,
    )
    ids = trainer._tokenize_prompts(quoted)[0]
    base = AutoTokenizer.from_pretrained(tiny_model_dir)  # the tokenizer before [SKIP] existed
    expected = base.apply_chat_template(quoted, add_generation_prompt=True, tokenize=True)
    assert ids == list(expected["input_ids"]) and skip not in ids[0]
    assert skip in GRPOTrainer._tokenize_prompts(trainer, quoted)[0][0]  # what TRL did
    assert trainer._tokenize_prompts(plain)[0] == GRPOTrainer._tokenize_prompts(trainer, plain)[0]


def test_grpo_args_pass_through_and_refusals(tmp_path):
    given = dict(num_generations=8, temperature=0.6, loss_type="grpo", beta=0.04, use_cpu=True)
    cfg = GRPOStageConfig(out=str(tmp_path / "o"), grpo_args=given, reward_weights=[1, 1, 1, 0.5])
    args = grpo_config(cfg)
    assert all(getattr(args, k) == v for k, v in given.items())
    assert args.reward_weights == [1, 1, 1, 0.5] and args.output_dir == cfg.out
    import torch

    if not torch.cuda.is_available():  # TRL's unset bf16 means True, which a CPU refuses
        assert grpo_config(GRPOStageConfig(out=cfg.out)).bf16 is False
    # PyYAML reads 1e-5 (no dot) as a string: TRL's number fields get numbers
    yaml_strings = {"learning_rate": "1e-5", "max_completion_length": "1e2", "beta": "4e-2"}
    args = grpo_config(dataclasses.replace(cfg, grpo_args={**given, **yaml_strings}))
    assert (args.learning_rate, args.max_completion_length, args.beta) == (1e-5, 100, 0.04)
    assert isinstance(args.max_completion_length, int) and args.loss_type == "grpo"
    weights = grpo_config(GRPOStageConfig(out=cfg.out, grpo_args={"reward_weights": ["5e-1"] * 4}))
    assert weights.reward_weights == [0.5] * 4
    bad = [
        (dict(grpo_args={"learning_rate": "fast"}), r"grpo_args.learning_rate='fast' is not a n"),
        (dict(grpo_args={"output_dir": "x"}), "set the stage's `out`"),
        (dict(grpo_args={"num_generationz": 2}), "grpo_args: .*num_generationz"),
        (dict(reward_weights=[1.0]), "1 reward_weights"),
        (dict(reward_weights=[1] * 4, grpo_args={"reward_weights": [1] * 4}), "given twice"),
    ]
    for overrides, message in bad:
        with pytest.raises(ValueError, match=message):
            grpo_config(dataclasses.replace(cfg, **overrides))


def test_unknown_lora_key_is_a_value_error_before_out_is_touched(
    eos_model_dir, problems_file, tmp_path
):
    out = tmp_path / "grpo"
    out.mkdir()
    (out / "keep.txt").write_text("old run")
    cfg = tiny_config(eos_model_dir, problems_file, out, 1, overwrite=True, lora={"rr": 4})
    with pytest.raises(ValueError, match="lora: .*rr"):  # the CLI reports ValueErrors
        run(cfg)
    assert (out / "keep.txt").exists()


def test_resume_skips_a_checkpoint_killed_while_saving(tmp_path):
    from stepprune.train.checkpoints import last_complete_checkpoint

    for step, complete in ((2, True), (4, True), (6, False)):
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"x")
        if complete:
            (path / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    (tmp_path / "checkpoint-10").mkdir()  # numbers, not names: 10 after 4
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
