"""VGG-16 for CIFAR-10 (13 conv layers with BatchNorm, one classifier layer): ~15M params, ~314M MACs."""
from __future__ import annotations

import torch
import torch.nn as nn

from . import register_model

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class CifarVGG(nn.Module):
    def __init__(self, cfg=VGG16_CFG, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c_in, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c_in = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 512, 1, 1)
        return self.classifier(x.flatten(1))


@register_model("vgg16", input_size=(3, 32, 32), num_classes=10)
def vgg16(num_classes: int = 10) -> nn.Module:
    return CifarVGG(num_classes=num_classes)
