"""A PyTorch reference of the Shallow-Deep Network CIFAR ResNet, with the key layout of the SDN code's
ResNet_SDN (init_conv, layers.{i}.layers.{0,1}, layers.{i}.output, end_layers), written for the
parity tests. forward returns every exit's logits, internal classifiers first."""

from __future__ import annotations

import torch
from torch import nn


class InternalClassifier(nn.Module):
    def __init__(self, size, channels, num_classes):
        super().__init__()
        k = size // 4 if size >= 4 else -1
        if k > 0:
            self.max_pool, self.avg_pool = nn.MaxPool2d(k), nn.AvgPool2d(k)
            self.alpha = nn.Parameter(torch.rand(1))
            self.linear = nn.Linear(channels * (size // k) ** 2, num_classes)
        else:
            self.alpha = None
            self.linear = nn.Linear(channels * size * size, num_classes)

    def forward(self, x):
        if self.alpha is not None:
            x = self.alpha * self.max_pool(x) + (1 - self.alpha) * self.avg_pool(x)
        return self.linear(x.reshape(x.shape[0], -1))


class Block(nn.Module):
    def __init__(self, cin, cout, stride, size, num_classes):
        super().__init__()
        self.layers = nn.ModuleList([
            nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                          nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)),
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else nn.Sequential(),
            nn.ReLU()])
        self.output = InternalClassifier(size, cout, num_classes) if num_classes else None

    def forward(self, x):
        total = self.layers[0](x) + self.layers[1](x)
        return self.layers[2](total), None if self.output is None else self.output(total)


class SDNResNet(nn.Module):
    def __init__(self, depth=56, num_classes=10, ics=(4, 8, 12, 16, 20, 24)):
        super().__init__()
        n = (depth - 2) // 6
        self.init_conv = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, cin, size, k = [], 16, 32, 0
        for s, cout in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if s > 0 and i == 0 else 1
                size //= stride
                k += 1
                blocks.append(Block(cin, cout, stride, size, num_classes if k in ics else 0))
                cin = cout
        self.layers = nn.ModuleList(blocks)
        self.end_layers = nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x):
        outs, h = [], self.init_conv(x)
        for block in self.layers:
            h, out = block(h)
            if out is not None:
                outs.append(out)
        return outs + [self.end_layers(h)]


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, pool, size, num_classes):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(),
                                    *([nn.MaxPool2d(2)] if pool else []))
        self.output = InternalClassifier(size, cout, num_classes) if num_classes else None

    def forward(self, x):
        x = self.layers(x)
        return x, None if self.output is None else self.output(x)


class FcBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(cin, cout), nn.ReLU(), nn.Dropout(0.5))
        self.output = None

    def forward(self, x):
        return self.layers(x), None


class SDNVGG(nn.Module):
    """VGG_SDN's VGG-16-BN layout on 32x32 inputs."""

    def __init__(self, num_classes=10, ics=(2, 4, 6, 7, 9, 10)):
        super().__init__()
        channels = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
        pooled, blocks, cin, size = (2, 4, 7, 10, 13), [], 3, 32
        for i, cout in enumerate(channels, start=1):
            size //= 2 if i in pooled else 1
            blocks.append(ConvBlock(cin, cout, i in pooled, size, num_classes if i in ics else 0))
            cin = cout
        blocks.append(FcBlock(512, 512))
        self.layers = nn.ModuleList(blocks)
        self.end_layers = nn.Sequential(nn.Linear(512, 512), nn.Dropout(0.5), nn.Linear(512, num_classes))

    forward = SDNResNet.forward
    init_conv = staticmethod(lambda x: x)


class MobileBlock(nn.Module):
    def __init__(self, cin, cout, stride, size, num_classes):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                                    nn.ReLU(), nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout),
                                    nn.ReLU())
        self.output = InternalClassifier(size, cout, num_classes) if num_classes else None

    forward = ConvBlock.forward


class SDNMobileNet(nn.Module):
    """MobileNet_SDN's layout on 32x32 inputs."""

    def __init__(self, num_classes=10, ics=(3, 5, 7, 9, 12)):
        super().__init__()
        cfg = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
               (512, 1), (1024, 2), (1024, 1))
        self.init_conv = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        blocks, cin, size = [], 32, 32
        for i, (cout, stride) in enumerate(cfg, start=1):
            size //= stride
            blocks.append(MobileBlock(cin, cout, stride, size, num_classes if i in ics else 0))
            cin = cout
        self.layers = nn.ModuleList(blocks)
        self.end_layers = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(1024, num_classes))

    forward = SDNResNet.forward
