"""Ctrl-C and SIGTERM end a run cleanly: the stage in progress is marked interrupted in the manifest,
the embedded Ray is stopped, and the command exits 130 (SIGINT) or 143 (SIGTERM) with one line.

Ray's core worker installs a crash handler for SIGTERM (a stack dump) and Ray Tune one for SIGINT;
`install()` puts ours back (call it after Ray started, and after each stage). The handler raises
`Interrupted` in the main thread, so every `finally` on the way out runs.
"""
from __future__ import annotations

import os
import signal

# Ray Tune would catch Ctrl-C itself, stop the experiment and return as if it had ended.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; `stage` is filled in by the runner."""

    def __init__(self, signum: int, stage: str | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.stage = stage

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them


def _raise(signum, _frame):
    raise Interrupted(signum)


def install() -> None:
    """SIGINT and SIGTERM raise Interrupted in the main thread (a no-op outside it)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise)
