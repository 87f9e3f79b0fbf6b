"""`eval_mode(model)`: a block that runs a module in eval mode and restores its training flags after.

Evaluations, FLOP counts, exports and latency measurements all need eval mode (BatchNorm running
statistics, no dropout) and must not leave a training model switched to eval behind them.
"""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def eval_mode(model):
    """`with eval_mode(model): ...`; every submodule's own training flag comes back afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training
