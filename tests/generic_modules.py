"""PyTorch modules that no hand-written family knows, for tests/test_torch_generic.py (a user's own classes)."""

import torch
from torch import nn


class SmallCNN(nn.Module):
    """A custom CNN: BatchNorm, a grouped convolution, adaptive pooling, a two-layer head."""

    def __init__(self, width: int = 8, num_classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, groups=2)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hidden = nn.Linear(2 * width, 16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(torch.relu(self.hidden(self.pool(x).flatten(1))))


class ConstantInForward(nn.Module):
    """Creates a tensor inside forward() without device=: extract_jax cannot trace it, torch.export can."""

    def __init__(self, features: int = 6):
        super().__init__()
        self.fc = nn.Linear(features, 3)

    def forward(self, x):
        return self.fc(x + torch.arange(x.shape[1], dtype=x.dtype))


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: neither route can trace it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


class NeedsArgument(nn.Module):
    def __init__(self, depth: int):
        super().__init__()
        self.layers = nn.Sequential(*[nn.Linear(4, 4) for _ in range(depth)])

    def forward(self, x):
        return self.layers(x)
