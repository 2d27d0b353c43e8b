"""Training output directories: which checkpoint a resume can use, and ``log_history.jsonl``
rewritten at every log so that a killed run keeps its curve (shared by sft and grpo)."""

from __future__ import annotations

import json
from pathlib import Path


def last_complete_checkpoint(out: Path) -> str | None:
    """The newest checkpoint whose trainer_state.json (written last) exists: a run killed while
    saving leaves a partial newest one, and the one before it is still there to resume from."""
    import re

    steps = [
        (int(m.group(1)), p)
        for p in out.iterdir()
        if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))
    ]
    for _, path in sorted(steps, reverse=True):
        if (path / "trainer_state.json").exists():
            return str(path)
    return None


def log_history_writer(out: Path):
    """A callback that rewrites ``log_history.jsonl`` from the trainer state at every log."""
    from transformers import TrainerCallback

    class LogHistoryWriter(TrainerCallback):
        def on_log(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                write_log_history(out, state.log_history)

    return LogHistoryWriter()


def write_log_history(out: Path, history: list[dict]) -> None:
    from stepprune.shards import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(entry) + "\n" for entry in history)
    atomic_write_bytes(out / "log_history.jsonl", lines.encode())
