"""The paper's image classifiers, with batch norm on the statistics of the current batch (as the reference code ran
it: no running averages, at training and at test time).

Batch norm is written out with mean and variance: `nn.BatchNorm2d` under `torch.func.vmap` gives a wrong
second-order meta-gradient (relative error 2e-3 to 2e-2 against a per-task loop; DESIGN.md), this does not.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class BatchStatNorm(nn.Module):
    """Normalise each channel (dimension 1) by the mean and variance of the current batch; learned scale and shift."""

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        var, mean = torch.var_mean(x, dims, correction=0, keepdim=True)
        scale = torch.rsqrt(var + self.eps) * self.weight.view(shape)  # per channel: one multiply-add per pixel
        return x * scale + (self.bias.view(shape) - mean * scale)


class SpatialMean(nn.Module):
    """[B, C, H, W] -> [B, C]: the mean over positions (the reference code's `reduce_mean` before the Omniglot head)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3))


def conv_net(in_channels: int, outputs: int, filters: int = 64, blocks: int = 4) -> nn.Sequential:
    """`blocks` x [3x3 conv with stride 2, batch-statistics norm, ReLU], the spatial mean, a linear head."""
    layers: list[nn.Module] = []
    for i in range(blocks):
        layers += [nn.Conv2d(in_channels if i == 0 else filters, filters, 3, stride=2, padding=1, bias=False),
                   BatchStatNorm(filters), nn.ReLU()]
    return nn.Sequential(*layers, SpatialMean(), nn.Linear(filters, outputs))


def pooled_conv_net(in_channels: int, outputs: int, size: int = 84, filters: int = 32, blocks: int = 4,
                    ) -> nn.Sequential:
    """The MiniImagenet net: `blocks` x [3x3 conv (stride 1, zero padding 1), batch-statistics norm, ReLU, 2x2 max-pool
    (stride 2, dropping an odd last row and column)], flattened into a linear head on `filters * (size // 2**blocks)**2`
    features (32 * 5 * 5 for 84x84 inputs). The input is `size` x `size`.

    The ReLU is applied after the pool: ReLU is monotone, so max-pool then ReLU is the same function with the same
    gradient as ReLU then max-pool, on a quarter of the pixels (benchmarks/test_miniimagenet_iteration.py)."""
    layers: list[nn.Module] = []
    for i in range(blocks):
        layers += [nn.Conv2d(in_channels if i == 0 else filters, filters, 3, padding=1, bias=False),
                   BatchStatNorm(filters), nn.MaxPool2d(2), nn.ReLU()]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(filters * (size // 2**blocks) ** 2, outputs))


def fc_net(inputs: int, outputs: int, hidden: tuple[int, ...] = (256, 128, 64, 64)) -> nn.Sequential:
    """Flatten, then [linear, batch-statistics norm, ReLU] per hidden width, then a linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i, width in enumerate(hidden):
        layers += [nn.Linear(inputs if i == 0 else hidden[i - 1], width), BatchStatNorm(width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden[-1], outputs))


class ImageClassification:
    """What the image-classification suites share: square images of `size` pixels, cross-entropy, accuracy in percent,
    and a context of free channels. A suite sets `size` and inherits these."""

    size: int
    metric = "accuracy"
    lower_is_better = False

    def context_shape(self, size: int) -> tuple[int, ...]:
        """A learned context of `size` free image-sized channels (paper: z "concatenated channel-wise with the input
        image"). Not constant channels: batch norm on batch statistics subtracts a constant channel's whole effect
        (with constant channels, context-vector adaptation stayed at 26% on Omniglot 5-way 1-shot)."""
        return (size, self.size, self.size)

    def append_inputs(self, x: Tensor, extra: Tensor) -> Tensor:
        """`extra` as extra channels of every image: free channels [c, size, size] as they are, a vector as
        constants."""
        planes = extra if extra.dim() == 3 else extra.view(-1, 1, 1).expand(-1, *x.shape[2:])
        return torch.cat([x, planes.expand(x.shape[0], -1, -1, -1)], dim=1)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.cross_entropy(outputs, targets)

    def score(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (outputs.argmax(-1) == targets).float().flatten(1).mean(1) * 100
