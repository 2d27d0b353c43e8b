"""Run the stepprune CLI and SIGKILL the process itself right after a named checkpoint is complete.

Usage: ``python tests/killhook.py CHECKPOINT_DIR stepprune-args...``. A test that polls for a
checkpoint and then sends SIGKILL races the trainer: on a fast machine the next checkpoints, or
the whole stage, are written before the signal lands (a CI run resumed from checkpoint-2 where
the test expected checkpoint-1). Dying inside the process, once ``Trainer._save_checkpoint`` has
returned (weights, optimizer, ``rl_state.json`` and ``trainer_state.json`` all written), makes the
kill point exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def killed_after(checkpoint: Path, cli: list[str], env: dict, log: Path) -> None:
    """Run ``cli`` (``python -m stepprune.cli ...``) until ``checkpoint`` is complete, where it
    SIGKILLs itself; its stderr goes to ``log``."""
    assert cli[1:3] == ["-m", "stepprune.cli"], cli
    cmd = [cli[0], __file__, str(checkpoint), *cli[3:]]
    with log.open("ab") as err:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, timeout=600)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]


def main() -> None:
    target = Path(sys.argv[1]).resolve()
    from transformers import Trainer

    save = Trainer._save_checkpoint

    def save_then_die_at_target(self, *args, **kwargs):
        save(self, *args, **kwargs)
        done = Path(self.args.output_dir).resolve() / f"checkpoint-{self.state.global_step}"
        if done == target:
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer._save_checkpoint = save_then_die_at_target
    sys.argv = ["stepprune", *sys.argv[2:]]
    from stepprune.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
