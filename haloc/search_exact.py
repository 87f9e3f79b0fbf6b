"""The exact solver of the rank search (`arch_solver="exact"`, the blockwise-exact search mode): no
weight training; each epoch measures every layer group's blockwise error at every joint candidate on a
few held-out batches (the error tables), and the result is the allocation of least summed error under
the budgets, solved exactly (`haloc.allocation`).

One strategy behind `SupernetSearch.run_epoch`, as `haloc.search_gradient.GradientSolver`.
"""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .decomposition import LayerSpec
from .supernet import _discrete_layer

JOINT_OPTIONS = 1_024  # a block's layers are measured jointly up to this many combinations of candidates


def error_groups(model: nn.Module, candidates: dict[str, tuple[int, ...]]) -> list[tuple[str, list[str]]]:
    """[(block, the searched layers the exact solver measures together)], blocks as `block_members`:
    a block's layers jointly (every combination of their candidates: cutting both convs of a residual
    block loses its branch once, not twice) where that is at most `JOINT_OPTIONS` combinations, else
    each alone with the others at their largest candidate, their errors then taken to add up."""
    from .search_loop import block_members

    out = []
    for block, members in block_members(model, candidates):
        if math.prod(len(candidates[n]) for n in members) <= JOINT_OPTIONS:
            out.append((block, members))
        else:
            out.extend((block, [n]) for n in members)
    return out


def exact_table_forwards(model: nn.Module, specs: dict[str, LayerSpec], candidates: dict[str, tuple[int, ...]]
                         ) -> float:
    """The work of one batch of the exact solver's tables, in forwards of the original model: the
    original's forward, each group's block once per combination of candidates, counted at the
    block's original multiply-adds (an upper bound: truncated layers cost less) over the model's,
    and the chosen architecture's blockwise error (the original's forward again and the blocks')."""
    from .hardware_loss import layer_flops
    from .search_loop import block_members

    whole = {n: layer_flops(specs[n], specs[n].max_rank) for n in candidates}
    total = max(sum(whole.values()), 1)
    share = {block: sum(whole[n] for n in members) / total for block, members in block_members(model, candidates)}
    work = 3.0
    for block, members in error_groups(model, candidates):
        work += math.prod(len(candidates[n]) for n in members) * share[block]
    return work


class ExactSolver:
    """The error tables (summed over the batches measured, per group of layers and joint candidate) and
    the least-error allocation read from them; alpha is set peaked at it."""

    def __init__(self, search):
        self.search = search
        self._table_sums: dict[tuple, torch.Tensor] = {}
        self._table_count = 0
        self.solution: dict[str, int] | None = None  # the least-error allocation of the latest epoch
        self._candidates: dict[str, list[nn.Module]] | None = None  # each layer's candidates, built once

    def state(self) -> dict:
        return {"groups": [list(k) for k in self._table_sums], "sums": list(self._table_sums.values()),
                "count": self._table_count, "solution": self.solution}

    def load(self, tables: dict) -> None:
        if tables.get("groups") is not None:  # absent in checkpoints of searches before arch_solver "exact"
            self._table_sums = {tuple(k): v for k, v in zip(tables["groups"], tables["sums"])}
            self._table_count = int(tables["count"])
            self.solution = dict(tables["solution"]) if tables["solution"] else None

    def error_groups(self) -> list[tuple[str, list[str]]]:
        """`error_groups` of this search's model and rank space."""
        return error_groups(self.search.original, self.search.rank_space.candidates)

    @torch.no_grad()
    def measure_error_tables(self, x: torch.Tensor) -> None:
        """Add one batch to the error tables: each group of `error_groups` at every combination of its
        layers' candidates, the block's relative output error against the original's (fed the
        original's input; batch statistics in BatchNorm, as in `architecture_blockwise_error`)."""
        from .search_loop import _discrete

        s = self.search
        seen = s._block_io(x)
        layers = s.supernet.layers()
        students = {n: student for n, _t, student in s._block_list()}
        if self._candidates is None:  # nothing trains the factors here: each candidate's own layer, built once
            self._candidates = {n: [_discrete_layer(layer, r) for r in layer.candidates] for n, layer in layers.items()}
        with _discrete(s.supernet, {n: layer.candidates[-1] for n, layer in layers.items()}):
            for block, members in self.error_groups():
                args, kwargs, target, scale = seen[block]
                student = students[block]
                shape = tuple(len(layers[n].candidates) for n in members)
                errors = torch.zeros(shape, dtype=torch.float64)
                try:
                    for index in itertools.product(*(range(k) for k in shape)):
                        # each layer as its candidate's factors (not the supernet's masked dense
                        # weight): a low rank runs as cheaply as it will in the compressed model
                        for name, i in zip(members, index):
                            if name == block:
                                student = self._candidates[name][i]
                            else:
                                students[block].set_submodule(name[len(block) + 1:], self._candidates[name][i])
                        errors[index] = float(F.mse_loss(student(*args, **kwargs), target) / scale)
                finally:
                    for name in members:
                        if name != block:
                            students[block].set_submodule(name[len(block) + 1:], layers[name])
                key = tuple(members)
                self._table_sums[key] = self._table_sums.get(key, 0) + errors
        self._table_count += 1

    def error_tables(self) -> dict[tuple, torch.Tensor]:
        """{layers: mean blockwise error at each joint candidate} over the batches measured so far."""
        return {k: v / max(self._table_count, 1) for k, v in self._table_sums.items()}

    def run_epoch(self, train_loader: Iterable, heldout_loader: Iterable) -> dict:
        """arch_solver "exact": `table_batches` more held-out batches into the error tables, then the
        least-error allocation under the budgets; alpha is set peaked at it, so that the argmax, the
        expected cost and the result read it as they read a gradient search."""
        from .allocation import min_error_ranks
        from .search_loop import _cycle, _discrete

        s = self.search
        epoch_start = time.perf_counter()
        held = _cycle(heldout_loader)
        batches = [next(held)[0].to(s.device) for _ in range(s.cfg.table_batches)]
        for x in batches:
            self.measure_error_tables(x)
        tables = {k: v.numpy() for k, v in self.error_tables().items()}
        self.solution = min_error_ranks(tables, s.rank_space.candidates, s.tables)
        self._peak_alpha(self.solution)
        arch_seconds = time.perf_counter() - epoch_start
        with _discrete(s.supernet, self.solution), torch.no_grad():
            objective = sum(float(s.blockwise_error(x)) for x in batches) / len(batches)
        s.epoch += 1
        s.step += s.steps_per_epoch or 1
        metrics = {"epoch": s.epoch, "tau": s.tau(), "train_ce": 0.0, "fm_mse": 0.0, "heldout_ce": objective,
                   "heldout_acc": None, "alpha_entropy": s.alpha_entropy()}
        seconds = {"weight": 0.0, "teacher": 0.0, "arch": arch_seconds, "eval": 0.0}
        return s._end_epoch(metrics, seconds, heldout_loader, epoch_start)

    @torch.no_grad()
    def _peak_alpha(self, ranks: dict[str, int], gap: float = 30.0) -> None:
        s = self.search
        for name, layer in s.supernet.layers().items():
            peak = torch.full_like(layer.alpha, -gap)
            peak[layer.candidates.index(ranks[name])] = 0.0
            layer.alpha.copy_(peak)

