"""The run lock: one process at a time may write a stage's shards into an output directory.

An ``fcntl.flock`` on ``out_dir/.lock-<name>``, so the kernel frees it however its holder exits;
a second writer is refused at once with the holder's pid, host, start time and command.
"""

from __future__ import annotations

import os
from pathlib import Path


class RunLockedError(RuntimeError):
    pass


class RunLock:
    """Exclusive right to write ``name`` in ``out_dir``, held by one process at a time.

    An ``fcntl.flock`` on ``out_dir/.lock-<name>``: the kernel drops it when the holder exits,
    however it exits (SIGKILL included), so a killed run never leaves a stuck lock. A second
    holder is refused at once with the first one's pid, host, start time and command.
    """

    def __init__(self, out_dir: str | Path, name: str) -> None:
        self.path = Path(out_dir) / f".lock-{name}"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import socket
        import sys
        from datetime import datetime

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._acquire()
        started = datetime.now().isoformat(timespec="seconds")
        info = f"pid {os.getpid()} on {socket.gethostname()}, since {started}: "
        info += " ".join(sys.argv)[:300]
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd
        return self

    def _acquire(self) -> int:
        """The locked descriptor of the file now at ``path``. The holder deletes the file on
        release, so a lock won on a file that was deleted meanwhile is worthless: try again."""
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunLockedError(
                    f"{self.path.parent}: another run is writing here ({holder}); wait for it "
                    "to end or choose another --out"
                ) from None
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            # Delete while still holding the lock (a killed run leaves the file, harmlessly);
            # a waiter that opened the old file sees it is gone and retries.
            self.path.unlink(missing_ok=True)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
