"""Cost accounting: FLOPs (2 x MACs, torch.utils.flop_counter's convention) and parameters."""
from __future__ import annotations

import torch
import torch.nn as nn

from .modes import eval_mode


@torch.no_grad()
def flops(model: nn.Module, example_input: torch.Tensor) -> int:
    """FLOPs of one forward of `example_input`, counted by torch's own FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with eval_mode(model), FlopCounterMode(display=False) as counter:
        model(example_input)
    return int(counter.get_total_flops())


def params(model: nn.Module) -> int:
    """Number of parameters (BatchNorm affine parameters included, buffers not)."""
    return sum(p.numel() for p in model.parameters())
