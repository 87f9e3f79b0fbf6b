"""Ctrl-C and SIGTERM end a run cleanly: the stage in progress is marked interrupted in the manifest,
the embedded Ray is stopped, and the command exits 130 (SIGINT) or 143 (SIGTERM) with one line.

Ray's core worker installs a crash handler for SIGTERM (a stack dump) and Ray Tune one for SIGINT;
`install()` puts ours back (call it after Ray started, and after each stage). The handler raises
`Interrupted` in the main thread, so every `finally` on the way out runs.

`Interrupted` is a KeyboardInterrupt because of where a signal often lands: in a blocking `ray.get`
or `ray.wait`, Ray's compiled wait loop runs the handler itself and keeps only a KeyboardInterrupt
(it ends the wait and raises a new, plain one); any other exception raised there is dropped, and
the signal with it (a driver waiting on an actor that could never be placed ignored Ctrl-C). The
signal is recorded before raising, so `from_keyboard_interrupt` turns Ray's plain KeyboardInterrupt
back into the right Interrupted (130 or 143).
"""
from __future__ import annotations

import os
import signal

# Ray Tune would catch Ctrl-C itself, stop the experiment and return as if it had ended.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")


_received: list[int] = []  # signals received by this process, the latest last


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; `stage` is filled in by the runner."""

    def __init__(self, signum: int, stage: str | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.stage = stage

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them


def raise_for(signum: int):
    """Record the signal, then raise its Interrupted (what every handler of the run ends with)."""
    _received.append(signum)
    raise Interrupted(signum)


def _raise(signum, _frame):
    raise_for(signum)


def from_keyboard_interrupt() -> Interrupted:
    """The Interrupted of a plain KeyboardInterrupt: Ray's own, raised for the latest signal we
    received (SIGINT when none was recorded: a Ctrl-C before our handler was installed)."""
    return Interrupted(_received[-1] if _received else signal.SIGINT)


def install() -> None:
    """SIGINT and SIGTERM raise Interrupted in the main thread (a no-op outside it)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise)
