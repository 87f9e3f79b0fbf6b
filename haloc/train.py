"""Fine-tune a decomposed student with knowledge distillation from the original model, and evaluate.

Plain functions (one epoch, one evaluation, the loop), so a Ray Train loop can reuse the steps.
SGD with a per-step cosine learning rate; the teacher runs in eval mode under no_grad, its
requires_grad flags left as they were. Each epoch is seeded from (seed, epoch) alone
(`haloc.data.seed_epoch`), and `TrainState` carries model, optimizer and scheduler state, so a run
checkpointed after any epoch and resumed ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import from_dict_strict
from .data import seed_epoch
from .errors import BadInputError
from .files import atomic_write
from .modes import eval_mode

log = logging.getLogger("haloc.train")


@dataclass(frozen=True)
class TrainConfig:
    """The settings of one fine-tune or training run (`haloc.finetune`): epochs, learning-rate schedule,
    optimizer and knowledge distillation from a teacher."""
    epochs: int = 10
    lr: float = 0.05  # peak learning rate; cosine decay to 0 over all steps
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128  # used by callers that build the loaders
    kd_weight: float = 0.5  # alpha: loss = (1 - alpha) CE + alpha T^2 KL(teacher_T || student_T)
    kd_temperature: float = 4.0
    label_smoothing: float = 0.0
    device: str = "auto"  # "cpu", "cuda", "cuda:N" or "auto" (cuda when available)
    seed: int = 0
    log_every: int = 50  # steps between log lines; 0 = never
    max_steps_per_epoch: int | None = None  # cap for smoke runs; None = the whole loader

    def __post_init__(self):
        checks = [("epochs", self.epochs >= 1), ("lr", self.lr > 0), ("momentum", 0 <= self.momentum < 1),
                  ("weight_decay", self.weight_decay >= 0), ("batch_size", self.batch_size >= 1),
                  ("kd_weight", 0 <= self.kd_weight <= 1), ("kd_temperature", self.kd_temperature > 0),
                  ("label_smoothing", 0 <= self.label_smoothing < 1), ("log_every", self.log_every >= 0),
                  ("max_steps_per_epoch", self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1)]
        bad = [name for name, ok in checks if not ok]
        if bad:
            raise BadInputError(f"TrainConfig: invalid {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}; "
                                "epochs/batch_size >= 1, lr > 0, 0 <= momentum < 1, 0 <= kd_weight <= 1, "
                                "kd_temperature > 0, 0 <= label_smoothing < 1")
        if not (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")):
            raise BadInputError(f"TrainConfig: device={self.device!r}; choose 'cpu', 'cuda', 'cuda:N' or 'auto'")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return from_dict_strict(cls, data, "train config")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(f"device={device!r} but no CUDA GPU is visible; use device='cpu' or 'auto'")
    return torch.device(device)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, targets: torch.Tensor,
            kd_weight: float, temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """(1 - kd_weight) CE(student, targets) + kd_weight T^2 KL(softmax(teacher/T) || softmax(student/T)).

    T^2 keeps the soft term's gradient scale independent of T (Hinton et al.). kd_weight 0 (or no
    teacher logits) is plain cross-entropy.
    """
    ce = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    if kd_weight == 0 or teacher_logits is None:
        return ce
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)  # [B, classes]
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)  # [B, classes]
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return (1 - kd_weight) * ce + kd_weight * temperature**2 * kl


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def train_one_epoch(student: nn.Module, teacher: nn.Module | None, loader, optimizer: torch.optim.Optimizer,
                    scheduler, cfg: TrainConfig) -> dict:
    """One pass over `loader` (at most cfg.max_steps_per_epoch steps); scheduler stepped per batch.

    Returns {"loss", "top1", "n", "steps", "lr"}: mean training loss and accuracy over the samples seen.
    """
    device = _device_of(student)
    student.train()
    if teacher is not None:
        teacher.eval()
    use_teacher = teacher is not None and cfg.kd_weight > 0
    total_loss, correct, n, steps = 0.0, 0, 0, 0
    for x, y in loader:
        if cfg.max_steps_per_epoch is not None and steps >= cfg.max_steps_per_epoch:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # [B, 3, H, W], [B]
        with torch.no_grad():
            t_logits = teacher(x) if use_teacher else None  # [B, classes]
        logits = student(x)  # [B, classes]
        loss = kd_loss(logits, t_logits, y, cfg.kd_weight, cfg.kd_temperature, cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {steps}; lower lr={cfg.lr}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        b = y.shape[0]
        total_loss += loss.item() * b
        correct += int((logits.argmax(1) == y).sum())
        n += b
        steps += 1
        if cfg.log_every and steps % cfg.log_every == 0:
            log.info("step %d loss %.4f acc %.4f lr %.4g", steps, total_loss / n, correct / n,
                     optimizer.param_groups[0]["lr"])
    if n == 0:
        raise BadInputError("the training loader yielded no batches; use more data or a smaller batch size")
    return {"loss": total_loss / n, "top1": correct / n, "n": n, "steps": steps,
            "lr": optimizer.param_groups[0]["lr"]}


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: str | torch.device | None = None) -> dict:
    """{"top1", "top5", "loss", "n"} of `model` on `loader` (top-5 is top-min(5, classes)); mode restored."""
    device = _device_of(model) if device is None else resolve_device(device) if isinstance(device, str) else device
    model.to(device)
    total_loss, top1, top5, n = 0.0, 0, 0, 0
    with eval_mode(model):
        for x, y in loader:
            x, y = x.to(device), y.to(device)  # [B, 3, H, W], [B]
            logits = model(x)  # [B, classes]
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            k = min(5, logits.shape[1])
            best = logits.topk(k, dim=1).indices  # [B, k]
            hit = best == y[:, None]  # [B, k]
            top1 += int(hit[:, 0].sum())
            top5 += int(hit.any(dim=1).sum())
            n += y.shape[0]
    if n == 0:
        raise BadInputError("the evaluation loader yielded no samples; check the validation data")
    return {"top1": top1 / n, "top5": top5 / n, "loss": total_loss / n, "n": n}


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, loader, max_batches: int | None = None) -> nn.Module:
    """Recompute every BatchNorm's running mean and variance from `loader` (no weight changes).

    A freshly decomposed model, or one taken out of a supernet, carries the statistics of another
    network; evaluating it without this step measures the wrong statistics, not the ranks.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    device = _device_of(model)
    was_training = model.training
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the batches below
    model.train()
    try:
        for i, (x, _) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            model(x.to(device))
    finally:
        for bn, m in zip(bns, saved):
            bn.momentum = m
        model.train(was_training)
    return model


@dataclass
class TrainState:
    """Everything needed to resume after `epoch` completed epochs (tensors copied, safe to keep)."""

    model: dict
    optimizer: dict
    scheduler: dict
    epoch: int  # completed epochs
    history: list = field(default_factory=list)  # per-epoch metric dicts so far
    config: dict = field(default_factory=dict)  # asdict(TrainConfig) of the run that made it

    @classmethod
    def capture(cls, model, optimizer, scheduler, epoch: int, history: list, cfg: TrainConfig) -> TrainState:
        return cls(copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()),
                   copy.deepcopy(scheduler.state_dict()), epoch, copy.deepcopy(history), asdict(cfg))

    def save(self, path: str | Path) -> None:
        """torch.save to `path` atomically (tensors and plain data only: loadable with weights_only)."""
        state = asdict(self)
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str | Path) -> TrainState:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            return cls(**obj)
        except FileNotFoundError as e:
            raise BadInputError(f"checkpoint {str(path)!r} does not exist; "
                                "pass a file written by TrainState.save") from e
        except Exception as e:
            raise BadInputError(f"checkpoint {str(path)!r} is not a TrainState ({type(e).__name__}: {e}); "
                                "pass a file written by TrainState.save or start without resuming") from e


@dataclass
class FinetuneResult:
    model: nn.Module
    history: list  # one dict per epoch: {"epoch", "train": {...}, "val": {...} or None}
    final: dict | None  # the last epoch's validation metrics
    state: TrainState  # after the last epoch run
    stopped_early: bool = False  # on_epoch_end asked to stop


def make_optimizer(model: nn.Module, cfg: TrainConfig, steps_total: int):
    """SGD and a per-step cosine schedule from cfg.lr down to 0 over `steps_total` steps."""
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps_total))
    return optimizer, scheduler


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a data-parallel wrapper (DDP's `.module`): its state dict has no prefix."""
    return model.module if isinstance(getattr(model, "module", None), nn.Module) else model


def finetune(student: nn.Module, teacher: nn.Module | None, train_loader, val_loader, cfg: TrainConfig,
             start_epoch: int = 0, state: TrainState | None = None,
             on_epoch_end: Callable[[int, dict, TrainState], bool | None] | None = None, *,
             device: str | torch.device | None = None, stop_after: int | None = None,
             evaluate_val: bool = True, history_extra: dict | None = None) -> FinetuneResult:
    """Fine-tune `student` (in place) for epochs [start, cfg.epochs) with KD from `teacher`.

    The one training loop of the project: `haloc.finetune` in a script, the pretraining of an
    original model, and every Ray Train worker (`workers/finetune_loop.py`) run it.

    `state` resumes a run (weights, optimizer, schedule and epoch come from it; `start_epoch` is then
    ignored). `on_epoch_end(epoch, metrics, state)` is called after each epoch, e.g. to checkpoint
    `state` or report to Ray; returning True stops the run after that epoch. The teacher only runs
    forward under `no_grad`: its parameters are not touched (a second student decomposed from it
    trains every parameter). For a data-parallel run: `device` is where a launcher already put the
    (wrapped) student; `evaluate_val=False` on every rank but 0; states are saved unwrapped.
    `stop_after` stops after that many completed epochs, the cosine schedule still spanning
    cfg.epochs, so that a later call resumes exactly where this one stopped.
    """
    if device is None:
        device = resolve_device(cfg.device)
        student.to(device)
    if not any(p.requires_grad for p in student.parameters()):
        raise BadInputError("the student has no trainable parameter (every requires_grad is False, e.g. it was "
                            "decomposed from a frozen model); call student.requires_grad_(True) first")
    if teacher is not None:
        # Its forward runs under no_grad: the teacher's requires_grad flags are left as the caller set them,
        # so a second student decomposed from it trains all of its parameters too.
        teacher.to(device).eval()
    steps_per_epoch = len(train_loader)
    if cfg.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    optimizer, scheduler = make_optimizer(student, cfg, cfg.epochs * steps_per_epoch)
    history: list = []
    if state is not None:
        unwrap(student).load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        start_epoch, history = state.epoch, list(state.history)
    if not 0 <= start_epoch <= cfg.epochs:
        raise BadInputError(f"start_epoch={start_epoch} must lie in [0, epochs={cfg.epochs}]")
    stop = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    current = state if state is not None else TrainState.capture(unwrap(student), optimizer, scheduler, start_epoch,
                                                                 history, cfg)
    stopped = False
    for epoch in range(start_epoch, stop):
        seed_epoch(train_loader, cfg.seed, epoch)
        train_metrics = train_one_epoch(student, teacher, train_loader, optimizer, scheduler, cfg)
        val_metrics = evaluate(unwrap(student), val_loader, device) if val_loader is not None and evaluate_val \
            else None
        metrics = {"epoch": epoch, "train": train_metrics, "val": val_metrics, **(history_extra or {})}
        history.append(metrics)
        log.info("epoch %d/%d train loss %.4f top1 %.4f%s", epoch + 1, cfg.epochs, train_metrics["loss"],
                 train_metrics["top1"], f" val top1 {val_metrics['top1']:.4f}" if val_metrics else "")
        current = TrainState.capture(unwrap(student), optimizer, scheduler, epoch + 1, history, cfg)
        if on_epoch_end is not None and on_epoch_end(epoch, metrics, current):
            stopped = epoch + 1 < cfg.epochs
            break
    final = history[-1]["val"] if history else None
    return FinetuneResult(student, history, final, current, stopped)
