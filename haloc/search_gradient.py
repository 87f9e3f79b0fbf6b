"""The gradient solver of the rank search (`arch_solver="gradient"`, the paper's relaxation): per batch
pair a weight step on the training split (CE, or KD against the original, plus the decaying feature-map
term) and an alpha step on the held-out split under the hardware-aware loss.

A solver is one strategy behind `SupernetSearch.run_epoch`: `run_epoch(train, heldout) -> metrics`,
`state() -> dict` and `load(state)`; `haloc.search_exact.ExactSolver` is the other.
"""
from __future__ import annotations

import time
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .hardware_loss import expected_cost, hardware_loss
from .train import kd_loss


class FeatureMatcher:
    """Relative MSE between block outputs of the supernet and of the frozen original model."""

    def __init__(self, supernet, original: nn.Module, layer_names: list[str]):
        from .search_loop import feature_modules

        self.names = feature_modules(original, layer_names)
        self.student: dict[str, torch.Tensor] = {}
        self.teacher: dict[str, torch.Tensor] = {}
        s_mods, t_mods = dict(supernet.net.named_modules()), dict(original.named_modules())
        self.hooks = [s_mods[n].register_forward_hook(self._store(self.student, n)) for n in self.names]
        self.hooks += [t_mods[n].register_forward_hook(self._store(self.teacher, n)) for n in self.names]

    @staticmethod
    def _store(bucket: dict, name: str):
        def hook(_m, _args, out):
            bucket[name] = out

        return hook

    def loss(self) -> torch.Tensor:
        """Mean over blocks of MSE / mean square of the original's output: scale-free across blocks."""
        terms = []
        for n in self.names:
            target = self.teacher[n].detach()
            terms.append(F.mse_loss(self.student[n], target) / target.pow(2).mean().clamp_min(1e-8))
        return torch.stack(terms).mean()

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()



class GradientSolver:
    """Weight steps and alpha steps, alternating (cfg.arch_every, cfg.warmup_epochs, cfg.train_weights)."""

    solution = None  # no allocation of its own: the result is read from alpha

    def __init__(self, search):
        self.search = search  # the SupernetSearch: supernet, optimizers, schedule, cost tables
        self._teacher_seconds = 0.0

    def state(self) -> dict:
        return {}  # everything it moves (weights, alpha, optimizers, step) is the search's own state

    def load(self, state: dict) -> None:
        pass

    def run_epoch(self, train_loader: Iterable, heldout_loader: Iterable) -> dict:
        """Alternate a weight step and an alpha step per batch pair; returns the epoch's metrics."""
        from .search_loop import _cycle

        s = self.search
        cfg = s.cfg
        search_alpha = s.epoch >= cfg.warmup_epochs or not cfg.train_weights
        matcher = FeatureMatcher(s.supernet, s.original, list(s.rank_space.candidates)) \
            if cfg.train_weights and cfg.fm_weight > 0 else None
        sums = {"ce": 0.0, "fm": 0.0, "arch_ce": 0.0, "arch_loss": 0.0, "correct": 0, "seen": 0}
        seconds = {"weight": 0.0, "teacher": 0.0, "arch": 0.0, "eval": 0.0}  # wall time per part
        self._teacher_seconds = 0.0
        epoch_start = time.perf_counter()
        held = _cycle(heldout_loader)
        s.supernet.train()
        n = 0
        try:
            for x, y in train_loader:
                if n >= s.steps_per_epoch:
                    break
                n += 1
                x, y = x.to(s.device), y.to(s.device)
                if cfg.train_weights:
                    s.supernet.set_mix(cfg.weight_mix, s.tau())
                    t0 = time.perf_counter()
                    s.supernet.requires_grad_(True)
                    ce, fm = self._weight_step(x, y, matcher)
                    sums["ce"] += ce
                    sums["fm"] += fm
                    seconds["weight"] += time.perf_counter() - t0
                if search_alpha and (n - 1) % cfg.arch_every == 0:
                    hx, hy = next(held)
                    s.supernet.set_mix(cfg.arch_mix, s.tau())
                    t0 = time.perf_counter()
                    arch_ce, arch_loss, correct = self._arch_step(hx.to(s.device), hy.to(s.device))
                    seconds["arch"] += time.perf_counter() - t0
                    sums["arch_ce"] += arch_ce
                    sums["arch_loss"] += arch_loss
                    if correct is not None:  # the blockwise objective runs no whole network
                        sums["correct"] += correct
                        sums["seen"] += len(hy)
                s.step += 1
        finally:
            if matcher:
                matcher.remove()
        arch_steps = max(1, -(-n // cfg.arch_every))
        n = max(1, n)
        s.epoch += 1
        metrics = {
            "epoch": s.epoch, "tau": s.tau(), "train_ce": sums["ce"] / n, "fm_mse": sums["fm"] / n,
            "heldout_ce": sums["arch_ce"] / arch_steps if search_alpha else None,
            "heldout_acc": sums["correct"] / sums["seen"] if sums["seen"] else None,
            "alpha_entropy": s.alpha_entropy(),
        }
        seconds["teacher"] = self._teacher_seconds  # inside the weight steps
        return s._end_epoch(metrics, seconds, heldout_loader, epoch_start)

    def _weight_step(self, x, y, matcher):
        s = self.search
        for p in s.supernet.arch_parameters():
            p.requires_grad_(False)
        logits = s.supernet(x)
        ce = F.cross_entropy(logits, y)
        loss = ce
        fm = torch.zeros(())
        w = s.fm_weight()
        use_fm = matcher is not None and w > 0
        if use_fm or s.cfg.kd_weight > 0:
            t0 = time.perf_counter()
            with torch.no_grad():
                teacher_logits = s.original(x)  # one forward serves both (the matcher hooks record it)
            self._teacher_seconds += time.perf_counter() - t0
            if s.cfg.kd_weight > 0:
                loss = kd_loss(logits, teacher_logits, y, s.cfg.kd_weight, s.cfg.kd_temperature)
            if use_fm:
                fm = matcher.loss()
                loss = loss + w * fm
        s.weight_opt.zero_grad(set_to_none=True)
        loss.backward()
        s.weight_opt.step()
        for p in s.supernet.arch_parameters():
            p.requires_grad_(True)
        return ce.item(), fm.item()

    def _arch_step(self, x, y):
        s = self.search
        s.supernet.requires_grad_(False)
        for p in s.supernet.arch_parameters():
            p.requires_grad_(True)
        if s.cfg.arch_objective == "blockwise":
            ce, logits = s.blockwise_error(x), None
        else:
            logits = s.supernet(x)
            ce = F.cross_entropy(logits, y)
        data_term = ce
        if logits is not None and s.cfg.arch_kd_weight > 0:
            with torch.no_grad():
                teacher_logits = s.original(x)
            data_term = kd_loss(logits, teacher_logits, y, s.cfg.arch_kd_weight, s.cfg.kd_temperature)
        if s.cfg.penalty_cost == "expected":
            weights = {n: F.softmax(layer.alpha, 0) for n, layer in s.supernet.layers().items()}
        else:
            weights = {n: layer.last_weights for n, layer in s.supernet.layers().items()}
        costs = [expected_cost(weights, t) for t in s.tables]
        loss = hardware_loss(data_term, costs, s.tables, s.cfg.penalty, s.cfg.beta, s.cfg.lam,
                             s.cfg.below_budget)
        s.arch_opt.zero_grad(set_to_none=True)
        loss.backward()
        s.arch_opt.step()
        s.supernet.requires_grad_(True)
        return ce.item(), loss.item(), None if logits is None else int((logits.argmax(1) == y).sum())

