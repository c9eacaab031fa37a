"""ResNet-18 and ResNet-50 (He et al. 2015), written out so torchvision is not needed.

`width` is the channel count of the first stage (64 in the paper); later stages double it. Inputs
smaller than 64 pixels get a 3x3 stride-1 stem without max-pool (the usual small-image variant), so
a narrow ResNet still has spatial extent left in its last stage on 16x16 digits.
"""
from __future__ import annotations

import torch
from torch import nn

SMALL_INPUT_LIMIT = 64
_STAGES = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(*_conv_bn(cin, cout, 1, stride))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(cin, planes, 3, stride), nn.ReLU(inplace=True), *_conv_bn(planes, planes, 3)
        )
        self.shortcut = _shortcut(cin, planes, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(cin, planes, 1), nn.ReLU(inplace=True),
            *_conv_bn(planes, planes, 3, stride), nn.ReLU(inplace=True),
            *_conv_bn(planes, cout, 1),
        )
        self.shortcut = _shortcut(cin, cout, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, depth: int, in_channels: int, num_classes: int, input_size: int, width: int) -> None:
        super().__init__()
        kind, counts = _STAGES[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        if input_size >= SMALL_INPUT_LIMIT:
            stem: list[nn.Module] = [*_conv_bn(in_channels, width, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        else:
            stem = [*_conv_bn(in_channels, width, 3), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*stem)
        layers: list[nn.Module] = []
        cin = width
        for stage, count in enumerate(counts):
            planes = width * 2**stage
            for index in range(count):
                layers.append(block(cin, planes, 2 if stage > 0 and index == 0 else 1))
                cin = planes * block.expansion
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def build(depth: int, in_channels: int, num_classes: int, input_size: int, width: int) -> nn.Module:
    return ResNet(depth, in_channels, num_classes, input_size, width)
