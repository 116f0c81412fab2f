"""Networks used by the demo, the scenarios and the benchmarks."""
from __future__ import annotations

import torch
from torch import nn


def mlp(in_features: int, num_classes: int, hidden: tuple[int, ...] = (256, 256)) -> nn.Module:
    """A ReLU MLP on flat inputs."""
    layers, width = [nn.Flatten()], in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet-5 for 28x28 inputs (the paper's MNIST network)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
    )


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(4, c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.GroupNorm(4, c_out))
        self.skip = nn.Identity() if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def resnet(num_classes: int = 10, depth: int = 8, width: int = 16, in_channels: int = 3) -> nn.Module:
    """A CIFAR ResNet (6n+2 layers; depth 32 is the paper's ResNet-32) with GroupNorm, so it has no
    running statistics and is a pure function of its parameters, as Langevin sampling needs."""
    if (depth - 2) % 6:
        raise ValueError(f"resnet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.GroupNorm(4, width), nn.ReLU()]
    c = width
    for stage, c_out in enumerate((width, 2 * width, 4 * width)):
        for i in range(n):
            layers.append(_Block(c, c_out, 2 if (stage > 0 and i == 0) else 1))
            c = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


NETWORKS = {"mlp": mlp, "lenet5": lenet5, "resnet": resnet}
