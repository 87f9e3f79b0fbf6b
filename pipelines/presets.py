"""Presets of the three pipelines: `demo` (every stage for real on generated data, minutes on a
laptop) and `paper` (the paper's setup as far as it is published; ours where it is silent)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PipelineDefaults:
    pipeline: str
    model: str
    dataset: str  # the real data set of the paper preset
    num_classes: int
    image_size: int
    paper: dict = field(default_factory=dict)
    demo: dict = field(default_factory=dict)


# Shared by the demos: two hardware kinds that every machine has (CPU timing, ZigZag simulation),
# tiny data and epochs, a coarse rank grid. Finishes in minutes on 2 CPU cores.
_DEMO_COMMON = dict(
    dataset="demo", weights=None, hardware=("cpu", "asic"), budgets=(0.6,), seeds=(0, 1),
    demo_train=256, demo_val=128, calibration_samples=8, search_epochs=3, search_warmup_epochs=1,
    search_steps_per_epoch=8, search_batch_size=32, finetune_epochs=1, finetune_steps_per_epoch=6,
    finetune_batch_size=32, finetune_workers=1, lam=5.0, pretrain_epochs=3,
)

IMAGENET_RESNET18 = PipelineDefaults(
    "imagenet_resnet18", "resnet18", "imagenet", num_classes=1000, image_size=224,
    # Paper: 66.16% fewer FLOPs, +0.90% top-1. Search/fine-tune epochs are ours (not published).
    paper=dict(weights="torchvision", budget_metric="flops", budgets=(0.34,), seeds=(0, 1, 2),
               hardware=("cpu",), search_epochs=10, finetune_epochs=40, finetune_lr=0.01,
               search_batch_size=128, finetune_batch_size=128, rank_step=16),
    demo=dict(_DEMO_COMMON, model="resnet18-demo", num_classes=10, image_size=64, rank_step=32),
)

CIFAR_RESNET20 = PipelineDefaults(
    "cifar_resnet20", "resnet20", "cifar10", num_classes=10, image_size=32,
    # Paper: 72.20% fewer FLOPs, +0.07% top-1.
    paper=dict(budget_metric="flops", budgets=(0.28,), seeds=(0, 1, 2), hardware=("cpu",),
               search_epochs=50, finetune_epochs=200, finetune_lr=0.05, search_batch_size=128,
               finetune_batch_size=128, rank_step=4, pretrain_epochs=200),
    demo=dict(_DEMO_COMMON, num_classes=10, image_size=32, rank_step=8),
)

CIFAR_VGG16 = PipelineDefaults(
    "cifar_vgg16", "vgg16", "cifar10", num_classes=10, image_size=32,
    # Paper: 86.44% fewer FLOPs, +0.38% top-1.
    paper=dict(budget_metric="flops", budgets=(0.14,), seeds=(0, 1, 2), hardware=("cpu",),
               search_epochs=50, finetune_epochs=200, finetune_lr=0.05, search_batch_size=128,
               finetune_batch_size=128, rank_step=16, pretrain_epochs=200),
    demo=dict(_DEMO_COMMON, num_classes=10, image_size=32, rank_step=32),
)
