"""Multi-process training paths: two processes under ``accelerate launch`` on the CPU (gloo).

accelerate's launcher has no CPU flag for several processes; ``--multi_gpu`` with
``ACCELERATE_USE_CPU=true`` starts them through torchrun, and accelerate then picks MULTI_CPU
with the gloo backend (README "Multi-process runs").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_ARGS, biased_copy

from stepprune.rl.ceeh import CEEH
from stepprune.rl.hooks import RolloutBatch

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def launch(*args: str) -> list[str]:
    accelerate = Path(sys.executable).with_name("accelerate")
    return [
        *(str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines"),
        *("1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"),
        *args,
    ]


def run_ok(cmd: list[str], env=ENV) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def eos_model(tiny_model_dir, tmp_path_factory):
    return biased_copy(tiny_model_dir, tmp_path_factory.mktemp("eos"))


def test_ceeh_state_is_identical_on_both_ranks_and_equals_a_single_process_replay(
    eos_model, tmp_path
):
    run_ok(launch(str(HERE / "mp_ceeh_run.py"), str(eos_model), str(tmp_path)))
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert ranks[0]["world"] == 2
    assert ranks[0]["state"] == ranks[1]["state"] and ranks[0]["batches"] == ranks[1]["batches"]
    batches = ranks[0]["batches"]
    assert len(batches) == 3 and all(len(b["ids"]) == 12 for b in batches)
    # one question's rollouts came from both processes (6 per rank)
    assert any(set(b["ids"][:6]) & set(b["ids"][6:]) for b in batches)
    replay = CEEH(mode="me", correctness="parity", length="ceeh_length")
    for step, b in enumerate(batches):
        n = len(b["ids"])
        rewards = torch.tensor([[c, float("nan")] for c in b["correct"]])
        replay.on_rewards(
            RolloutBatch(
                question_ids=b["ids"],
                rewards_per_func=rewards,
                reward_names=["parity", "ceeh_length"],
                reward_weights=torch.ones(2),
                lengths=torch.tensor(b["lengths"]),
                finished=torch.ones(n, dtype=torch.bool),
                num_generations=4,
                step=step,
                max_steps=3,
            )
        )
    assert ranks[0]["state"]["ceeh"] == replay.state_dict()
    assert len(replay.table) >= 3


def _problems(path: Path) -> Path:
    rows = [{"problem": f"{i} apples?", "answer": str(i)} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_grpo_stage_finishes_under_two_processes_and_one_rank_writes(eos_model, tmp_path):
    args = {**TINY_ARGS, "per_device_train_batch_size": 2, "max_steps": 2, "save_steps": 1}
    out = tmp_path / "grpo"
    proc = run_ok(
        launch(
            *("-m", "stepprune.cli", "grpo", "--method", "ceeh", "--model", str(eos_model)),
            *("--problems", str(_problems(tmp_path / "p.jsonl")), "--out", str(out)),
            *("--set", f"grpo_args={json.dumps(args)}"),
        )
    )
    assert proc.stderr.count("outputs written to") == 1
    assert proc.stdout.count("model, logs and card:") == 1  # one summary, not one per rank
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert json.loads((out / "summary.json").read_text())["global_step"] == 2
    assert (out / "checkpoint-2" / "rl_state.json").exists() and (out / "rl_state.json").exists()
    # Its weights cannot equal a one-process run's: each rank samples its rollouts from its
    # own random stream, so the two runs train on different completions.


def test_sft_under_two_processes_equals_one_process_with_the_same_global_batch(
    tiny_model_dir, tmp_path
):
    from safetensors.torch import load_file
    from test_sft_data import pruned_row, write_pruned

    pruned = write_pruned(tmp_path / "pruned", [pruned_row(i) for i in range(8)])
    # SGD, so that float-level differences in the reduction order stay float-level (Adam's
    # m / sqrt(v) would turn a 1e-12 gradient into a full step either way).
    common = {"max_steps": 2, "learning_rate": 0.05, "optim": "sgd", "logging_steps": 1}
    common.update(save_strategy="no", report_to="none", bf16=False, disable_tqdm=True)
    common.update(activation_checkpointing=False, dataloader_num_workers=0, use_cpu=True)

    def sft(out: Path, per_device: int, cmd_prefix: list[str]):
        args = json.dumps({**common, "per_device_train_batch_size": per_device})
        return run_ok(
            [
                *cmd_prefix,
                *("-m", "stepprune.cli", "sft", "--input", str(pruned), "--out", str(out)),
                *("--model", str(tiny_model_dir), "--all", "--set", f"sft_args={args}"),
            ]
        )

    two = sft(tmp_path / "two", 2, launch())
    sft(tmp_path / "one", 4, [sys.executable])
    assert two.stderr.count("outputs written to") == 1
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    moved = [
        k for k in a if k in base and a[k].shape == base[k].shape and not torch.equal(a[k], base[k])
    ]
    assert len(moved) >= len(a) // 2
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "argv, code",
    [(["problems"], 0), (["prune", "-i", "/nonexistent-input", "--out", "unused"], 1)],
    ids=["success", "refusal"],
)
def test_the_cli_destroys_the_process_group_on_every_exit(argv, code, tmp_path, monkeypatch):
    """A rank that exits with its gloo group alive can abort in std::terminate (issue #29):
    the CLI destroys the group whether the command succeeds or is refused."""
    import torch.distributed as dist

    from stepprune import cli

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        monkeypatch.setattr(sys, "argv", ["stepprune", *argv])
        monkeypatch.chdir(tmp_path)
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        assert exit_info.value.code == code
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
