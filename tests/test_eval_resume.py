"""eval after SIGKILL: the rerun finishes the work and matches an uninterrupted run exactly."""

import signal
import subprocess
import sys
import time

from conftest import tiny_generate

from stepprune.schema import EVAL_RESULTS
from stepprune.shards import read_table, shard_files
from stepprune.stages.eval import EvalConfig, run


def _answers(out) -> dict:
    table = read_table(f"{out}/results", EVAL_RESULTS)
    rows = table.select(["problem_id", "strategy", "kappa", "seed", "answer_text", "correct"])
    rows = rows.to_pylist()
    keys = [(r["problem_id"], r["strategy"], r["kappa"], r["seed"]) for r in rows]
    assert len(set(keys)) == len(keys), "a result was written twice"
    return {k: (r["answer_text"], r["correct"]) for k, r in zip(keys, rows, strict=True)}


def test_eval_resumes_after_sigkill(tiny_model_dir, tmp_path):
    gen = tiny_generate(
        tiny_model_dir,
        tmp_path,
        12,
        max_new_tokens=60,
        temperature=1.2,
        prompt_template="{problem}\n\n",
    )
    # batch_size=1: no padding, so an answer cannot depend on which run's batch it fell in.
    settings = dict(
        input=str(gen),
        model=str(tiny_model_dir),
        kappas=[0.0, 0.5, 1.0],
        strategies=["low", "random"],
        answer_tokens=24,
        dtype="float32",
        bootstrap=50,
        batch_size=1,
        rows_per_shard=1,
        flush_seconds=0.0,
    )
    killed = tmp_path / "killed"
    code = (
        "from stepprune.stages.eval import EvalConfig, run; "
        f"run(EvalConfig(out={str(killed)!r}, **{settings!r}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(shard_files(killed / "results") if (killed / "results").exists() else []) < 3:
        assert proc.poll() is None, "eval finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _answers(killed)
    clean = tmp_path / "clean"
    run(EvalConfig(out=str(clean), **settings))
    expected = _answers(clean)
    assert 0 < len(partial) < len(expected)
    summary = run(EvalConfig(out=str(killed), **settings))
    assert _answers(killed) == expected
    assert summary["results"] == len(expected)
    assert not list((killed / "results").glob(".tmp-*"))
