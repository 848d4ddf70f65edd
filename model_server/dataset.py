"""An offline, deterministic dataset of short motion clips built from real photographs.

Every clip is a crop of one photograph (the background) over which a soft-edged elliptical patch cut
from another photograph (the object) moves. The class is the object's MOTION, never its looks: object
size, position, colour and source photo are drawn from the same ranges for every class, so a single
frame cannot tell the classes apart and the model has to look at time — which is what makes it a fair
target for video attacks.

The photographs are those shipped inside scikit-image (no download). Train, val and test draw their
backgrounds and objects from DISJOINT photographs, so the test accuracy measures generalisation to
unseen imagery, not memorised textures. Each clip has its own seed derived from
(seed, split, label, index), so a clip does not depend on how many others are generated with it.

CLI: `python -m model_server.dataset --sample samples/sample_clip.npy` writes the bundled demo clip.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import skimage.data

FRAMES, HEIGHT, WIDTH = 16, 112, 112
PATCH = 64  # side of the object patch before it is scaled into the frame

CLASS_NAMES: list[str] = [
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "zoom_in",
    "zoom_out",
    "rotate_cw",
    "rotate_ccw",
    "orbit",
    "shake",
]

# Photographs bundled with scikit-image, split by index. `motorcycle_right` and `cat` are left out:
# they are near-copies of `motorcycle_left` and `chelsea` and would leak across splits.
PHOTOS: list[str] = [
    # train (10)
    "astronaut", "coffee", "rocket", "immunohistochemistry", "retina",
    "camera", "coins", "brick", "grass", "cell",
    # val (4)
    "chelsea", "moon", "gravel", "page",
    # test (4)
    "motorcycle_left", "hubble_deep_field", "clock", "text",
]  # fmt: skip
SPLITS: dict[str, slice] = {"train": slice(0, 10), "val": slice(10, 14), "test": slice(14, 18)}
# Stream ids keep the seeds of different splits (and of the attacker's reference clips) apart.
_STREAM = {"train": 0, "val": 1, "test": 2, "reference": 3}
DEFAULT_REFERENCE_SEED = 20_240_601
# The bundled demo clip (samples/sample_clip.npy) is a test clip of this class.
SAMPLE_CLASS, SAMPLE_SEED = "move_right", 7


def split_photos(split: str) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    return PHOTOS[SPLITS[split]]


@cache
def load_photo(name: str) -> np.ndarray:
    """One bundled photograph as uint8 H×W×3 RGB (grey images are replicated to 3 channels)."""
    if name == "motorcycle_left":
        image = skimage.data.stereo_motorcycle()[0]
    else:
        image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)


# --- appearance ----------------------------------------------------------------------------------


def _random_crop(rng: np.random.Generator, photo: np.ndarray, side: int, min_side: int) -> np.ndarray:
    """A random square crop of `photo`, at a random scale, resized to side×side."""
    h, w = photo.shape[:2]
    crop = int(rng.integers(min_side, max(min_side, int(min(h, w) * 0.8)) + 1))
    crop = min(crop, h, w)
    y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    patch = photo[y : y + crop, x : x + crop]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return cv2.resize(np.ascontiguousarray(patch), (side, side), interpolation=cv2.INTER_AREA)


def _photometric(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Random per-channel gain and offset: tints grey photos, varies colour ones (float32 result)."""
    gain = rng.uniform(0.75, 1.25, size=3).astype(np.float32)
    offset = np.float32(rng.uniform(-25, 25))
    return image.astype(np.float32) * gain + offset


def _object_patch(rng: np.random.Generator, photo: np.ndarray) -> np.ndarray:
    """The most textured of a few random crops, so the object is rarely a flat, invisible blob."""
    candidates = [_random_crop(rng, photo, PATCH, min_side=PATCH // 2) for _ in range(3)]
    return max(candidates, key=lambda c: float(c.std()))


def _ellipse_mask(rng: np.random.Generator) -> np.ndarray:
    """A soft-edged ellipse (not a disc, so that rotation changes the silhouette), float32 PATCH×PATCH."""
    mask = np.zeros((PATCH, PATCH), np.float32)
    major = PATCH // 2 - 3
    minor = int(major * rng.uniform(0.5, 0.8))
    cv2.ellipse(mask, (PATCH // 2, PATCH // 2), (major, minor), float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), 1.5)


# --- motion --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trajectory:
    """Per-frame object centre (x, y), scale (× PATCH) and angle (degrees, counter-clockwise)."""

    x: np.ndarray
    y: np.ndarray
    scale: np.ndarray
    angle: np.ndarray


def _trajectory(rng: np.random.Generator, label: int) -> Trajectory:
    t = np.arange(FRAMES, dtype=np.float64)
    name = CLASS_NAMES[label]
    # Nuisance motion shared by every class (slow drift, slight spin and breathing) so that the classes
    # differ only in their dominant motion, not in the absence of any other.
    drift = rng.uniform(-0.3, 0.3, size=2)
    spin = rng.uniform(-1.0, 1.0)
    breathe = rng.uniform(0.9, 1.1) ** (t / (FRAMES - 1))
    scale0 = rng.uniform(0.5, 0.9)
    angle0 = rng.uniform(0, 360)
    angle = angle0 + spin * t
    scale = scale0 * breathe
    cx, cy = rng.uniform(30, WIDTH - 30), rng.uniform(30, HEIGHT - 30)
    x, y = cx + drift[0] * t, cy + drift[1] * t

    if name.startswith("move_"):
        speed = rng.uniform(1.5, 3.5)
        travel = speed * (FRAMES - 1)
        start = rng.uniform(12, WIDTH - 12 - travel)  # the whole path stays inside the frame
        path = start + speed * t
        if name == "move_left":
            x = WIDTH - path
        elif name == "move_right":
            x = path
        elif name == "move_up":
            y = HEIGHT - path
        else:
            y = path
    elif name.startswith("zoom_"):
        small, ratio = rng.uniform(0.4, 0.55), rng.uniform(1.6, 2.1)
        grow = small * ratio ** (t / (FRAMES - 1))
        scale = grow if name == "zoom_in" else grow[::-1]
    elif name.startswith("rotate_"):
        speed = rng.uniform(4.0, 9.0)
        # cv2 angles are counter-clockwise as displayed (y axis down), so clockwise is negative.
        angle = angle0 + (-speed if name == "rotate_cw" else speed) * t
    elif name == "orbit":
        radius = rng.uniform(10, 20)
        turns = rng.uniform(0.8, 1.2) * rng.choice([-1.0, 1.0])
        phase = rng.uniform(0, 2 * math.pi) + 2 * math.pi * turns * t / (FRAMES - 1)
        cx, cy = rng.uniform(30, WIDTH - 30, size=2)
        x, y = cx + radius * np.cos(phase), cy + radius * np.sin(phase)
    elif name == "shake":
        amplitude, period = rng.uniform(5, 10), rng.uniform(4, 7)
        direction = rng.uniform(0, math.pi)
        offset = amplitude * np.sin(2 * math.pi * t / period + rng.uniform(0, 2 * math.pi))
        x, y = cx + offset * math.cos(direction), cy + offset * math.sin(direction)
    else:  # pragma: no cover - CLASS_NAMES and this function are edited together
        raise AssertionError(name)
    return Trajectory(x=x, y=y, scale=scale, angle=angle)


# --- rendering -----------------------------------------------------------------------------------


def _render(rng: np.random.Generator, label: int, photos: list[str]) -> np.ndarray:
    """One clip, uint8 FRAMES×HEIGHT×WIDTH×3."""
    bg_name, obj_name = rng.choice(len(photos), size=2, replace=False)
    background = _photometric(rng, _random_crop(rng, load_photo(photos[bg_name]), WIDTH, min_side=WIDTH))
    patch = _photometric(rng, _object_patch(rng, load_photo(photos[obj_name])))
    mask = _ellipse_mask(rng)
    path = _trajectory(rng, label)
    noise_sigma = rng.uniform(0.0, 3.0)

    clip = np.empty((FRAMES, HEIGHT, WIDTH, 3), np.uint8)
    centre = (PATCH / 2, PATCH / 2)
    for i in range(FRAMES):
        matrix = cv2.getRotationMatrix2D(centre, float(path.angle[i]), float(path.scale[i]))
        matrix[:, 2] += (path.x[i] - centre[0], path.y[i] - centre[1])
        obj = cv2.warpAffine(patch, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(mask, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)[:, :, None]
        frame = background * (1.0 - alpha) + obj * alpha
        frame += rng.standard_normal(frame.shape, dtype=np.float32) * noise_sigma  # sensor noise
        clip[i] = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    return clip


def _clip_rng(seed: int, stream: str, label: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAM[stream], label, index]))


def _render_class(photos: list[str], stream: str, label: int, n: int, seed: int) -> np.ndarray:
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label must be in [0, {len(CLASS_NAMES)}), got {label}")
    return np.stack([_render(_clip_rng(seed, stream, label, i), label, photos) for i in range(n)])


def generate_split(split: str, n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n_per_class` clips of every class, from the split's photographs only.

    Returns (clips N×T×H×W×3 uint8, labels N int64), grouped by class; shuffle before training.
    """
    photos = split_photos(split)
    clips = np.concatenate(
        [_render_class(photos, split, label, n_per_class, seed) for label in range(len(CLASS_NAMES))]
    )
    labels = np.repeat(np.arange(len(CLASS_NAMES), dtype=np.int64), n_per_class)
    return clips, labels


def reference_clips(label: int, n: int, seed: int = DEFAULT_REFERENCE_SEED) -> np.ndarray:
    """`n` attacker-owned clips of class `label` (n×T×H×W×3 uint8), drawn from the TRAIN photographs.

    A separate seed stream keeps them apart from the clips the model was trained on.
    """
    return _render_class(split_photos("train"), "reference", label, n, seed)


# --- CLI -----------------------------------------------------------------------------------------


def first_correct_test_clip(model_name: str, label: int, seed: int, tries: int = 50) -> np.ndarray:
    """The first test clip of class `label` that the trained model classifies correctly."""
    import torch

    from model_server import zoo

    model = zoo.load_trained(model_name)
    for index in range(tries):
        clip = _render(_clip_rng(seed, "test", label, index), label, split_photos("test"))
        with torch.inference_mode():
            if int(model(zoo.to_model_input(clip[None])).argmax(1)) == label:
                return clip
    raise RuntimeError(
        f"no correctly classified {CLASS_NAMES[label]} test clip in {tries} tries: is the model trained?"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the bundled demo clip (.npy and lossless .mkv).")
    parser.add_argument("--sample", type=Path, required=True, help="where to write the demo .npy clip")
    parser.add_argument("--label", default=SAMPLE_CLASS, choices=CLASS_NAMES)
    parser.add_argument("--model", default="mini_c3d")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED)
    args = parser.parse_args(argv)

    from core.video import encode_ffv1, write_npy

    clip = first_correct_test_clip(args.model, CLASS_NAMES.index(args.label), args.seed)
    args.sample.parent.mkdir(parents=True, exist_ok=True)
    write_npy(clip, args.sample)
    mkv = args.sample.with_suffix(".mkv")
    mkv.write_bytes(encode_ffv1(clip))
    print(f"wrote {args.sample} and {mkv}: a {args.label} test clip that {args.model} classifies correctly")


if __name__ == "__main__":
    main()
