"""torchvision's ResNet-18 for ImageNet: 11.7M params, 1.82G MACs."""
from __future__ import annotations

import torch.nn as nn

from . import register_model


@register_model("resnet18", input_size=(3, 224, 224), num_classes=1000)
def resnet18(num_classes: int = 1000) -> nn.Module:
    from torchvision.models import resnet18 as tv_resnet18

    return tv_resnet18(weights=None, num_classes=num_classes)
