"""A signal that lands while the driver blocks in Ray's compiled wait loop still ends the run.

Ray's `ray.get` runs Python's signal handlers from C++ and keeps only a KeyboardInterrupt; before
`Interrupted` was one, the handler's exception was dropped there and Ctrl-C was ignored for as long
as the wait lasted (forever, for an actor that can never be placed).
"""
import os
import signal
import threading

import pytest

from orchestrator import interrupts


@pytest.fixture
def our_handlers():
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    interrupts.install()
    yield
    for sig, handler in old.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_a_blocking_get_on_an_unplaceable_actor_interrupts_it(ray_cluster, our_handlers,
                                                                              signum, code):
    import ray

    @ray.remote(resources={"no_node_offers_this": 1})
    class Unplaceable:
        def ping(self):
            return 1

    actor = Unplaceable.remote()
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signum))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            ray.get(actor.ping.remote(), timeout=60)  # before the fix: GetTimeoutError after 60 s
    finally:
        timer.cancel()
        ray.kill(actor)
    # Ray raised its own, plain KeyboardInterrupt (or ours); either way the run knows which signal it was
    found = caught.value if isinstance(caught.value, interrupts.Interrupted) else interrupts.from_keyboard_interrupt()
    assert found.signum == signum and found.exit_code == code


def test_interrupted_is_a_keyboard_interrupt_and_not_an_exception():
    """Not an Exception: `except Exception` on the way out must not swallow a signal."""
    assert issubclass(interrupts.Interrupted, KeyboardInterrupt)
    assert not issubclass(interrupts.Interrupted, Exception)
