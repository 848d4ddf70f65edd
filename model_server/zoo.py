"""The model zoo: architectures in plain torch (no torchvision), with their input spec.

Every model takes float N×3×T×H×W holding raw 0–255 values and normalises inside itself, so the
server, the trainer and the benchmark all feed it the same thing: `to_model_input(uint8 clips)`.
This module depends on torch and numpy only, so it ships inside the `.mar` next to the handler.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
NUM_CLASSES = 10


@dataclass(frozen=True)
class InputSpec:
    frames: int
    height: int
    width: int

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.frames, self.height, self.width)


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


class MiniC3D(nn.Module):
    """A small C3D-style network sized for 2 CPU cores.

    - Input is RGB plus the frame-to-frame difference. The classes are motions of a small object
      over a textured, static background; without the difference channels the network sat at chance
      for several epochs (the motion signal is a small part of what it sees), with them it learns.
    - The stem cuts 112×112 to 28×28 at once (a 4×4 patchify, no temporal mixing): the objects are
      tens of pixels wide, so fine detail is not needed, and this keeps training to minutes on a CPU.
    - The 3×3×3 blocks see motion; time is halved twice, so the last block spans the whole clip.
    - Global average AND max pooling: the object covers a fraction of the frame, and max pooling
      keeps its response from being diluted by the background (it converged much faster).
    """

    def __init__(
        self, num_classes: int = NUM_CLASSES, widths: tuple[int, int, int, int] = (24, 48, 96, 160)
    ) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.normalize = Normalize(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))
        self.features = nn.Sequential(
            _block(6, w1, (1, 4, 4), (1, 4, 4)),  # T×28×28
            _block(w1, w2, (3, 3, 3), (1, 2, 2)),  # T×14×14
            _block(w2, w3, (3, 3, 3), (2, 2, 2)),  # T/2×7×7
            _block(w3, w4, (3, 3, 3), (2, 1, 1)),  # T/4×7×7
        )
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(2 * w4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = torch.cat([x, frame_difference(x)], dim=1)
        x = self.features(x)
        pooled = torch.cat([x.mean(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))], dim=1)
        return self.classifier(self.dropout(pooled))


@dataclass(frozen=True)
class ZooEntry:
    builder: Callable[[], nn.Module]
    input: InputSpec


MODELS: dict[str, ZooEntry] = {
    "mini_c3d": ZooEntry(builder=MiniC3D, input=InputSpec(frames=16, height=112, width=112)),
}


def entry(name: str) -> ZooEntry:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; the zoo has {sorted(MODELS)}")
    return MODELS[name]


def build(name: str) -> nn.Module:
    """A freshly initialised model (call torch.manual_seed first for reproducible weights)."""
    return entry(name).builder()


def to_model_input(clips: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 N×T×H×W×3 clips to the float32 N×3×T×H×W tensor every zoo model takes.

    The copy to the device happens while still uint8 (4× fewer bytes than float32).
    """
    tensor = torch.as_tensor(clips).to(device)
    return tensor.permute(0, 4, 1, 2, 3).float()


def weights_path(name: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    return weights_dir / f"{name}.pt"


def card_path(name: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    return weights_dir / f"{name}.json"


def load_card(name: str, weights_dir: Path = WEIGHTS_DIR) -> dict:
    """The model card the trainer wrote: labels, input spec, accuracy, weights hash."""
    return json.loads(card_path(name, weights_dir).read_text())


def load_trained(name: str, weights_dir: Path = WEIGHTS_DIR, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model in eval mode, float32 on `device` (the weights are stored as fp16)."""
    model = build(name)
    state = torch.load(weights_path(name, weights_dir), map_location="cpu", weights_only=True)
    model.load_state_dict(state)  # copy_ casts each fp16 tensor into the float32 parameter
    return model.to(device).eval()
