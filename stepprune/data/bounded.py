"""Bounded calls: run a function with a hard time limit from any thread or process.

Libraries like math-verify bound their own time with ``signal.alarm``, which only works on the
main thread. Here the main thread uses a SIGALRM timer of its own (restoring any previous one);
other threads hand the call to one spawned helper process that is killed and restarted when a
call overruns, the only way to stop sympy stuck in C code.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


class _Deadline(BaseException):
    """Raised by our SIGALRM handler; a BaseException so math-verify's ``except Exception``
    blocks cannot swallow it."""


def _run_with_alarm(fn: Callable[..., Any], args: tuple, timeout: float) -> Any:
    """``fn(*args)`` on the main thread, interrupted by SIGALRM after ``timeout`` seconds. Like
    math-verify's own timeout, it fires between bytecodes, not inside one long C call."""
    armed = [True]

    def on_alarm(signum: int, frame: Any) -> None:
        if armed[0]:
            raise _Deadline

    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer_delay, _ = signal.setitimer(signal.ITIMER_REAL, max(timeout, 1e-3))
    started = time.monotonic()
    try:
        value = fn(*args)
        armed[0] = False  # an alarm landing after this point must not raise
        return value
    except _Deadline:
        raise TimeoutError(f"gave up after {timeout:g}s") from None
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
        if outer_delay:
            # Somebody else's timer was running: give back what is left of it.
            left = outer_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3))


def _helper_main(conn: Any, preload: tuple[str, ...]) -> None:
    """Body of a helper process: answer ``(fn, args)`` requests until the pipe closes."""
    for name in preload:
        importlib.import_module(name)
    conn.send(("ready", None))
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = ("ok", fn(*args))
        except Exception as exc:  # report, keep serving: one bad input must not kill the helper
            reply = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(reply)


class _Helper:
    """A spawn-context child process that runs calls with a hard time limit; killed and lazily
    restarted when a call overruns, the only way to stop sympy stuck in C code. Calls from
    several threads take turns (time spent waiting is not part of a call's ``timeout``)."""

    startup_timeout = 120.0

    def __init__(self, preload: tuple[str, ...]) -> None:
        self.pid = os.getpid()
        self._preload = preload
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Any = None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_helper_main, args=(child, self._preload), daemon=True)
        self._proc.start()
        child.close()
        self._receive(self.startup_timeout)  # imports are not charged to the first call

    def _receive(self, timeout: float) -> tuple[str, Any]:
        if not self._conn.poll(timeout):
            self._stop()
            raise TimeoutError(f"no answer after {timeout:g}s; helper process killed")
        try:
            return self._conn.recv()
        except EOFError as exc:
            self._stop()
            raise RuntimeError("grader helper process died") from exc

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def run(self, fn: Callable[..., Any], args: tuple, timeout: float) -> Any:
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                self._stop()
                self._start()
            self._conn.send((fn, args))
            status, value = self._receive(timeout)
        if status != "ok":
            raise RuntimeError(value)
        return value


_HELPER_LOCK = threading.Lock()
_helper: _Helper | None = None


def run_bounded(
    fn: Callable[..., Any], args: tuple, timeout: float, preload: tuple[str, ...] = ()
) -> Any:
    """``fn(*args)`` with a hard time limit; raises TimeoutError when it is exceeded."""
    global _helper
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _run_with_alarm(fn, args, timeout)
    if multiprocessing.current_process().daemon:
        # Daemonic processes may not have children: better unbounded than always wrong.
        logger.debug("daemonic process: math-verify runs without a time limit")
        return fn(*args)
    with _HELPER_LOCK:
        # A forked child inherits the parent's helper object but not its process.
        if _helper is None or _helper.pid != os.getpid():
            _helper = _Helper(preload=preload)
        helper = _helper
    return helper.run(fn, args, timeout)
