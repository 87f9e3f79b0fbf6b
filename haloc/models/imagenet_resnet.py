"""torchvision's ResNet-18 for ImageNet: 11.7M params, 1.82G MACs."""
from __future__ import annotations

import torch.nn as nn

from . import register_model


@register_model("resnet18", input_size=(3, 224, 224), num_classes=1000)
def resnet18(num_classes: int = 1000) -> nn.Module:
    from torchvision.models import resnet18 as tv_resnet18

    return tv_resnet18(weights=None, num_classes=num_classes)


@register_model("resnet18-demo", input_size=(3, 64, 64), num_classes=10)
def resnet18_demo(num_classes: int = 10) -> nn.Module:
    """ResNet-18 on 64x64 inputs with 10 classes: the imagenet_resnet18 demo's model. Same layers and
    layer names as resnet18 (the ranks JSON carries this name, so exports rebuild this geometry)."""
    return resnet18(num_classes=num_classes)
