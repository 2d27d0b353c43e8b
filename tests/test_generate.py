"""The generate stage on the tiny model: row contents, resume after SIGKILL, sharding."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

from stepprune.schema import GENERATIONS
from stepprune.shards import read_table, shard_files
from stepprune.stages.generate import GenerateConfig, run


@pytest.fixture()
def problem_file(tmp_path):
    path = tmp_path / "toy.jsonl"
    with path.open("w") as fh:
        for i in range(12):
            fh.write(
                json.dumps({"qid": f"q{i}", "question": f"What is {i} + 1?", "gold": str(i + 1)})
            )
            fh.write("\n")
    return path


def _config(problem_file, model, out, **kw):
    base = dict(
        problems=str(problem_file),
        problem_field="question",
        answer_field="gold",
        id_field="qid",
        model=str(model),
        out=str(out),
        max_new_tokens=24,
        batch_size=4,
        temperature=1.0,
        top_p=1.0,
        dtype="float32",
    )
    base.update(kw)
    return GenerateConfig(**base)


def test_rows_are_consistent(problem_file, tiny_model_dir, tmp_path):
    out = tmp_path / "gen"
    summary = run(_config(problem_file, tiny_model_dir, out, n_samples=2, limit=5))
    df = pl.from_arrow(read_table(out, GENERATIONS))
    assert summary["rows"] == df.height == 10
    assert sorted(zip(df["problem_id"], df["sample_index"], strict=True)) == sorted(
        (f"q{i}", s) for i in range(5) for s in range(2)
    )
    for row in df.iter_rows(named=True):
        ent = np.array(row["token_entropies"])
        assert len(row["token_ids"]) == len(ent) == len(row["token_logprobs"]) == row["n_tokens"]
        assert row["entropy_source"] == "exact" and row["token_entropy_lower"] is None
        steps = row["steps"]
        assert row["n_steps"] == len(steps)
        bounds = [(s["token_start"], s["token_end"]) for s in steps]
        if steps:  # spans partition [0, n_thinking_tokens)
            assert bounds[0][0] == 0 and bounds[-1][1] == row["n_thinking_tokens"]
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
        for s in steps:
            ref = float(ent[s["token_start"] : s["token_end"]].sum())
            assert abs(s["entropy_sum"] - ref) < 1e-3
            assert s["text"] == row["completion"][s["char_start"] : s["char_end"]] or s["is_skip"]
        assert row["thinking"] == row["completion"][: row["thinking_char_end"]]
        assert json.loads(row["sampling"])["temperature"] == 1.0
    assert summary["mean_tokens"] == pytest.approx(df["n_tokens"].mean())


def test_sharded_runs_cover_every_problem_once(problem_file, tiny_model_dir, tmp_path):
    out = tmp_path / "gen"
    for i in range(3):
        run(_config(problem_file, tiny_model_dir, out, num_shards=3, shard_index=i, greedy=True))
    ids = read_table(out, GENERATIONS, ["problem_id"]).column("problem_id").to_pylist()
    assert sorted(ids) == sorted(f"q{i}" for i in range(12))
    tags = {f.name.split("-")[1] for f in shard_files(out)}
    assert tags == {"000of003", "001of003", "002of003"}


def test_bad_shard_index_is_an_error():
    with pytest.raises(ValueError, match="shard-index"):
        GenerateConfig(num_shards=2, shard_index=2)


def _cli(problem_file, model, out):
    return [
        sys.executable,
        "-m",
        "stepprune.cli",
        "generate",
        "--problems",
        str(problem_file),
        "--problem-field",
        "question",
        "--answer-field",
        "gold",
        "--id-field",
        "qid",
        "--model",
        str(model),
        "--out",
        str(out),
        "--max-new-tokens",
        "24",
        "--batch-size",
        "2",
        "--n-samples",
        "2",
        "--dtype",
        "float32",
        "--set",
        "rows_per_shard=2",
        "--set",
        "flush_seconds=0",
    ]


def test_resume_after_sigkill(problem_file, tiny_model_dir, tmp_path):
    out = tmp_path / "gen"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for n_shards_before_kill in (1, 4):
        proc = subprocess.Popen(
            _cli(problem_file, tiny_model_dir, out),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while len(shard_files(out) if out.exists() else []) < n_shards_before_kill:
            assert proc.poll() is None, "generate finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = read_table(out, GENERATIONS, ["problem_id"]).num_rows
    assert 0 < partial < 24
    done = subprocess.run(_cli(problem_file, tiny_model_dir, out), env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    table = read_table(out, GENERATIONS)  # every shard readable
    keys = list(
        zip(table["problem_id"].to_pylist(), table["sample_index"].to_pylist(), strict=True)
    )
    assert sorted(keys) == sorted((f"q{i}", s) for i in range(12) for s in range(2))
    assert "rows            24" in done.stdout.decode()
