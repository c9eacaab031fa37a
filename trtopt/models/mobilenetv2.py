"""MobileNetV2 (Sandler et al. 2018): inverted residuals with depthwise 3x3 convolutions.

Included because depthwise layers have a few channels with very wide ranges, the textbook case where
per-tensor INT8 activations lose accuracy. `width_mult` scales every layer's channels (rounded to a
multiple of 8, as in the paper); inputs below 64 pixels get a stride-1 stem.
"""
from __future__ import annotations

import torch
from torch import nn

SMALL_INPUT_LIMIT = 64
# expansion t, output channels c, repeats n, first stride s (Table 2 of the paper)
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _round8(channels: float) -> int:
    rounded = max(8, int(channels + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * channels else rounded


def _conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise 3x3 -> 1x1 linear projection, with a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = [] if expansion == 1 else [_conv_bn_relu6(cin, hidden, 1)]
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_skip else out


class MobileNetV2(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, input_size: int, width_mult: float) -> None:
        super().__init__()
        cin = _round8(32 * width_mult)
        last = _round8(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, cin, 3, 2 if input_size >= SMALL_INPUT_LIMIT else 1)]
        for expansion, channels, repeats, stride in _SETTINGS:
            cout = _round8(channels * width_mult)
            for index in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if index == 0 else 1, expansion))
                cin = cout
        layers.append(_conv_bn_relu6(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def build(in_channels: int, num_classes: int, input_size: int, width_mult: float) -> nn.Module:
    return MobileNetV2(in_channels, num_classes, input_size, width_mult)
