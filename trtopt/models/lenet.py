"""The classic small CNN: two 5x5 convolutions, max-pool, two fully connected layers on 1x16x16."""
from __future__ import annotations

import torch
from torch import nn


class LeNet(nn.Module):
    """Conv(1,20,5) -> ReLU -> Conv(20,20,5) -> ReLU -> MaxPool 2 -> FC 320 -> 50 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 20, 5), nn.ReLU(inplace=True),
            nn.Conv2d(20, 20, 5), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(320, 50), nn.ReLU(inplace=True), nn.Linear(50, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def build() -> nn.Module:
    return LeNet()
