"""What a concurrent writer, a SIGTERM or a Ctrl-C can cost: nothing lost, nothing written twice.

Each test drives the real CLI in subprocesses on the tiny model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stepprune.runlock import RunLock, RunLockedError
from stepprune.schema import EVAL_RESULTS, GENERATIONS
from stepprune.shards import read_table

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
# Rows of the signal tests: enough that a signal sent once 4 are buffered lands before the last
# one is done even on a fast machine (CI's finished 40-row score runs before its signal arrived).
N_GEN = 160


def problems(path: Path, n: int, prefix: str) -> Path:
    rows = [
        {"id": f"{prefix}{i}", "problem": f"What is {i} + 1?", "answer": str(i + 1)}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def generate_cmd(model, problem_file, out, *extra) -> list[str]:
    return [
        *(sys.executable, "-m", "stepprune.cli", "generate", "--problems", str(problem_file)),
        *("--id-field", "id", "--model", str(model), "--out", str(out), "--max-new-tokens", "24"),
        *("--batch-size", "2", "--dtype", "float32", "--set", "flush_seconds=3600", *extra),
    ]


def default_sigint() -> None:
    """A pytest started in the background ignores SIGINT, and its children inherit that: Python
    then never raises KeyboardInterrupt, and a Ctrl-C test would see the run finish instead."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def keys(out: Path) -> list[tuple]:
    table = read_table(out, GENERATIONS, ["problem_id", "sample_index"])
    return list(
        zip(table["problem_id"].to_pylist(), table["sample_index"].to_pylist(), strict=True)
    )


def no_temp_files(out: Path) -> bool:
    return not [p for p in out.rglob(".tmp-*")]


def wait_for(proc, pattern: str, timeout: float = 240) -> str:
    """Read the process's stderr until ``pattern`` matches (tqdm redraws with carriage returns)."""
    os.set_blocking(proc.stderr.fileno(), False)
    seen, deadline = "", time.monotonic() + timeout
    while not re.search(pattern, seen):
        assert proc.poll() is None, f"ended before {pattern!r}: {seen[-2000:]}"
        assert time.monotonic() < deadline, seen[-2000:]
        chunk = proc.stderr.read()
        seen += chunk.decode(errors="replace") if chunk else ""
        time.sleep(0.02)
    return seen


def test_lock_refuses_a_second_holder_and_is_freed_by_a_kill(tmp_path):
    code = (
        "import sys, time; from stepprune.runlock import RunLock; "
        f"lock = RunLock({str(tmp_path)!r}, 'generate-000of001').__enter__(); "
        "print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=ENV)
    assert holder.stdout.readline().strip() == b"held"
    with (
        pytest.raises(RunLockedError, match=rf"another run is writing here \(pid {holder.pid} on "),
        RunLock(tmp_path, "generate-000of001"),
    ):
        pass
    with RunLock(tmp_path, "generate-001of002"):  # another tag is another writer
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with RunLock(tmp_path, "generate-000of001"):  # the kernel dropped the killed run's lock
        assert (tmp_path / ".lock-generate-000of001").exists()
    assert not (tmp_path / ".lock-generate-000of001").exists()  # a clean exit deletes it


def test_a_lock_won_on_a_deleted_file_is_retried_on_the_new_one(tmp_path, monkeypatch):
    # A waiter that opened the lock file just before its holder deleted it must not count the
    # lock it then wins on the orphan: it would run beside a third process locking the new file.
    import fcntl

    path = tmp_path / ".lock-x"
    calls = []
    real_flock = fcntl.flock

    def flock(fd, op):
        if not calls:  # the holder deletes the file between our open and our flock
            path.unlink()
        calls.append(os.fstat(fd).st_ino)
        return real_flock(fd, op)

    path.write_text("old holder")
    old = path.stat().st_ino
    monkeypatch.setattr(fcntl, "flock", flock)
    with RunLock(tmp_path, "x") as lock:
        assert calls[0] == old and len(calls) == 2
        assert os.fstat(lock._fd).st_ino == path.stat().st_ino


def test_a_second_generate_into_the_same_out_refuses_before_writing(tiny_model_dir, tmp_path):
    out = tmp_path / "gen"
    first = subprocess.Popen(
        generate_cmd(tiny_model_dir, problems(tmp_path / "a.jsonl", 120, "a"), out),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for(first, r"generate:\s+\d+%")  # holds the lock and is generating
    second_problems = problems(tmp_path / "b.jsonl", 4, "b")
    second = subprocess.run(
        generate_cmd(tiny_model_dir, second_problems, out), env=ENV, capture_output=True, text=True
    )
    assert second.returncode == 1
    assert f"another run is writing here (pid {first.pid} on " in second.stderr
    os.set_blocking(first.stderr.fileno(), True)
    rest = first.communicate()[1].decode()
    assert first.returncode == 0, rest[-2000:]
    assert sorted(keys(out)) == sorted((f"a{i}", 0) for i in range(120))
    again = subprocess.run(generate_cmd(tiny_model_dir, second_problems, out), env=ENV)
    assert again.returncode == 0
    got = keys(out)
    assert sorted(got) == sorted(
        [(f"a{i}", 0) for i in range(120)] + [(f"b{i}", 0) for i in range(4)]
    )
    assert len(set(got)) == len(got)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_generate_saves_its_buffer_on_sigterm_and_ctrl_c(tiny_model_dir, tmp_path, sig, code):
    out = tmp_path / "gen"
    # N_GEN rows, so that the signal always lands before the work is done, on any machine
    cmd = generate_cmd(tiny_model_dir, problems(tmp_path / "p.jsonl", N_GEN, "q"), out)
    proc = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=default_sigint
    )
    wait_for(proc, rf"generate:\s+\d+%\|[^|]*\|\s+(?:[4-9]|\d\d+)/{N_GEN}")  # >= 4 buffered
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == code
    os.set_blocking(proc.stderr.fileno(), True)
    message = proc.stderr.read().decode()
    stopped = re.search(r"error: stopped by (SIG\w+): (\d+) new rows saved", message)
    assert stopped and stopped.group(1) == sig.name, message[-2000:]
    saved = int(stopped.group(2))
    assert 4 <= saved < N_GEN and len(keys(out)) == saved  # flush_seconds=3600: from the buffer
    assert no_temp_files(out)
    assert subprocess.run(cmd, env=ENV, capture_output=True).returncode == 0
    got = keys(out)
    assert sorted(got) == sorted((f"q{i}", 0) for i in range(N_GEN)) and len(set(got)) == N_GEN


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_score_saves_its_buffer_on_sigterm_and_ctrl_c(tiny_model_dir, tmp_path, sig, code):
    gen = tmp_path / "gen"
    made = subprocess.run(
        generate_cmd(tiny_model_dir, problems(tmp_path / "p.jsonl", N_GEN, "q"), gen), env=ENV
    )
    assert made.returncode == 0
    out = tmp_path / "scored"
    cmd = [
        *(sys.executable, "-m", "stepprune.cli", "score", "-i", str(gen), "--out", str(out)),
        *("--model", str(tiny_model_dir), "--set", "group_rows=2", "--set", "flush_seconds=3600"),
    ]
    proc = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=default_sigint
    )
    wait_for(proc, r"rescore: (?:[4-9]|\d\d+)cot")
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == code
    assert no_temp_files(out) and 4 <= len(keys(out)) < N_GEN
    saved_line(proc, sig, len(keys(out)))
    assert subprocess.run(cmd, env=ENV, capture_output=True).returncode == 0
    assert sorted(keys(out)) == sorted(keys(gen))


def saved_line(proc, sig, saved: int) -> None:
    """The one line a stopped stage prints: the signal's name and the rows it saved."""
    os.set_blocking(proc.stderr.fileno(), True)
    message = proc.stderr.read().decode()
    stopped = re.search(r"error: stopped by (SIG\w+): (\d+) new rows saved", message)
    assert stopped and stopped.group(1) == sig.name, message[-2000:]
    assert int(stopped.group(2)) == saved


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_eval_saves_its_buffer_on_sigterm_and_ctrl_c(tiny_model_dir, tmp_path, sig, code):
    from conftest import tiny_generate

    gen = tiny_generate(tiny_model_dir, tmp_path, 12, max_new_tokens=40, temperature=1.2)
    out = tmp_path / "eval"
    cmd = [
        *(sys.executable, "-m", "stepprune.cli", "eval", "-i", str(gen), "--out", str(out)),
        *("--model", str(tiny_model_dir), "--dtype", "float32", "--set", "batch_size=1"),
        *("--set", "flush_seconds=3600", "--set", "answer_tokens=16", "--set", "bootstrap=20"),
        *("--set", "kappas=[0.0, 0.5, 1.0]", "--set", "strategies=[low, random]"),
    ]
    proc = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=default_sigint
    )
    wait_for(proc, r"eval:\s+\d+%\|[^|]*\|\s+(?:[6-9]|[1-9]\d)/")
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == code
    results = out / "results"
    saved = read_table(results, EVAL_RESULTS).num_rows
    assert saved >= 6 and no_temp_files(out)
    saved_line(proc, sig, saved)
    assert subprocess.run(cmd, env=ENV, capture_output=True).returncode == 0
    table = read_table(results, EVAL_RESULTS)
    rows = list(
        zip(
            *(table[c].to_pylist() for c in ("problem_id", "strategy", "kappa", "seed")),
            strict=True,
        )
    )
    assert len(rows) == len(set(rows)) > saved
    # the full expected set: every trajectory with a step, low at one seed and random at three
    # (eval's default random_seeds), each at the three kappas
    gens = read_table(gen, GENERATIONS).to_pylist()
    specs = [("low", 0)] + [("random", s) for s in range(3)]
    expected = {
        (g["problem_id"], name, k, seed)
        for g in gens
        if g["n_steps"] >= 1
        for name, seed in specs
        for k in (0.0, 0.5, 1.0)
    }
    assert set(rows) == expected


@pytest.mark.parametrize("stage", ["score", "eval"])
def test_score_and_eval_refuse_a_second_run_into_their_out(tiny_model_dir, tmp_path, stage):
    from conftest import tiny_generate

    gen = tiny_generate(tiny_model_dir, tmp_path, 2, max_new_tokens=12)
    out = tmp_path / "out"
    code = (
        "import time; from stepprune.runlock import RunLock; "
        f"RunLock({str(out)!r}, {stage!r}).__enter__(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=ENV)
    assert holder.stdout.readline().strip() == b"held"
    cmd = [sys.executable, "-m", "stepprune.cli", stage, "-i", str(gen), "--out", str(out)]
    proc = subprocess.run(
        [*cmd, "--model", str(tiny_model_dir), "--dtype", "float32"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    holder.kill()
    holder.wait()
    assert proc.returncode == 1
    assert f"another run is writing here (pid {holder.pid} on " in proc.stderr
    assert not [p for p in out.rglob("*.parquet")]


def run_on_a_full_disk(tmp_path: Path, setup: str, args: list[str]) -> subprocess.CompletedProcess:
    """The CLI with ``setup`` run first in its process: it makes a writer raise ENOSPC the way
    a full disk does, without filling one."""
    script = tmp_path / "full_disk.py"
    script.write_text(f"import errno, sys\n{setup}\nfrom stepprune.cli import main\nmain()\n")
    return subprocess.run(
        [sys.executable, str(script), *args], env=ENV, capture_output=True, text=True
    )


def error_lines(stderr: str) -> list[str]:
    """The lines that report an error, from where the report starts (tqdm redraws with
    carriage returns and leaves its last bar without a newline)."""
    pattern = re.compile(r"error:|Traceback| ERROR | WARNING ")
    return [x[m.start() :] for x in re.split(r"[\r\n]+", stderr) if (m := pattern.search(x))]


def test_generate_on_a_full_disk_is_one_line(tiny_model_dir, tmp_path):
    # pyarrow reports a full disk as an OSError with errno 28 and no file name.
    setup = (
        "import pyarrow.parquet as pq\n"
        "def full(*args, **kwargs):\n"
        "    raise OSError(errno.ENOSPC, 'Error writing bytes to file. Detail: [errno 28]')\n"
        "pq.write_table = full"
    )
    out = tmp_path / "gen"
    args = generate_cmd(tiny_model_dir, problems(tmp_path / "p.jsonl", 4, "q"), out)[3:]
    proc = run_on_a_full_disk(tmp_path, setup, [*args, "--set", "rows_per_shard=2"])
    assert proc.returncode == 1
    part = out / "part-000of001-00000.parquet"
    want = f"error: [Errno 28] No space left on device: '{part}'"
    assert error_lines(proc.stderr) == [want], proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == []  # no shard, temp file or lock left


def test_sft_on_a_full_disk_is_one_line_and_leaves_no_partial_checkpoint(tmp_path):
    from conftest import make_tiny_model
    from test_sft_data import pruned_row, write_pruned

    from stepprune.train.checkpoints import last_complete_checkpoint

    model = make_tiny_model(tmp_path / "model")
    pruned = write_pruned(tmp_path / "pruned", [pruned_row(i) for i in range(8)])
    # The second checkpoint's weights meet a full disk, as safetensors reports it.
    setup = (
        "import transformers.modeling_utils as mu\n"
        "from safetensors import SafetensorError\n"
        "real, calls = mu.safe_save_file, []\n"
        "def save(*args, **kwargs):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2:\n"
        "        raise SafetensorError('Error while serializing: I/O error: No space left on "
        "device (os error 28)')\n"
        "    return real(*args, **kwargs)\n"
        "mu.safe_save_file = save"
    )
    sft_args = {
        **dict(per_device_train_batch_size=4, logging_steps=1, save_steps=1, max_steps=2),
        **dict(use_cpu=True, bf16=False, report_to="none", disable_tqdm=True),
    }
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(json.dumps({"sft_args": sft_args}))  # JSON is YAML
    out = tmp_path / "sft"
    args = ["sft", "-r", str(recipe), "-i", str(pruned), "--out", str(out), "--model", str(model)]
    proc = run_on_a_full_disk(tmp_path, setup, args)
    assert proc.returncode == 1
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: saving failed ("), lines
    assert "No space left on device" in lines[0] and "removed the partial checkpoint-2" in lines[0]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert last_complete_checkpoint(out) == str(out / "checkpoint-1")  # what --resume takes
    assert (out / "checkpoint-1" / "model.safetensors").exists()
