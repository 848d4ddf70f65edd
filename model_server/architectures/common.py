"""Pieces several zoo architectures share."""
from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10


class Normalize(nn.Module):
    """0–255 RGB to roughly zero-mean unit-variance; kept in the model so callers only cast uint8."""

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1, 1), torch.tensor(std).view(1, 3, 1, 1, 1)
        # Buffers, not constants, so they follow .to(device); persistent=False keeps them out of the
        # weights file (they are code, not learned).
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", mean_t / std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale - self.shift


def frame_difference(x: torch.Tensor) -> torch.Tensor:
    """x[t] - x[t-1] along time (zero for the first frame), same shape as x (N×C×T×H×W)."""
    return torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, 1:] - x[:, :, :-1]], dim=2)


def _block(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> nn.Sequential:
    padding = tuple(k // 2 for k in kernel)
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )
