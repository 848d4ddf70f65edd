"""Pictures of a job for its page: frame strips, the amplified perturbation, the spatial mask, per-frame
bars and a lossy preview. Pure functions of uint8 T×H×W×3 clips; the page routes serve what they return.

The perturbation picture follows the papers' figures (V-BAD Fig. 5, Heuristic Fig. 1, RLSB Fig. 3):
mid-grey where a pixel is untouched, brighter or darker by the signed change, amplified so the largest
change reaches the ends of the scale. The gain is returned so the page can say how much it amplified.
"""
from __future__ import annotations

import io
import math
from html import escape

import numpy as np

from worker.metrics import perturbation, perturbed_pixels

GREY = 128
GAP = 2  # pixels between frames of a strip
MASK_COLOUR = np.array([230, 30, 30], dtype=np.float32)
PREVIEW_FPS = 8
PREVIEW_SCALE = 2


def strip(frames: np.ndarray, gap: int = GAP, background: int = 255) -> np.ndarray:
    """The frames side by side, left to right in time, with a thin gap between them."""
    count, height, width, _ = frames.shape
    out = np.full((height, count * width + (count - 1) * gap, 3), background, dtype=np.uint8)
    for index, frame in enumerate(frames):
        left = index * (width + gap)
        out[:, left:left + width] = frame
    return out


def amplified_perturbation(adversarial: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, float]:
    """Grey (128) where nothing changed; 128 ± gain·δ elsewhere, clipped. Returns frames and gain."""
    delta = perturbation(adversarial, clean)
    peak = int(np.abs(delta).max()) if delta.size else 0
    gain = 1.0 if peak == 0 else max(1.0, 127.0 / peak)
    shown = np.clip(GREY + delta.astype(np.float32) * gain, 0, 255)
    return np.rint(shown).astype(np.uint8), gain


def mask_overlay(adversarial: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """The clean frames dimmed, with every perturbed pixel (any channel changed) painted red."""
    mask = perturbed_pixels(perturbation(adversarial, clean))[..., None]
    dimmed = clean.astype(np.float32) * 0.45 + 255 * 0.2
    shown = np.where(mask, 0.25 * dimmed + 0.75 * MASK_COLOUR, dimmed)
    return np.rint(shown).clip(0, 255).astype(np.uint8)


def per_frame_map(adversarial: np.ndarray, clean: np.ndarray) -> list[float]:
    """Mean |δ| of each frame (0-255 scale); a key frame is one whose value is above zero."""
    delta = np.abs(perturbation(adversarial, clean)).reshape(len(clean), -1)
    return [float(row.mean()) for row in delta]


def png(image: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))  # cv2 writes BGR
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()


def preview_webm(clean: np.ndarray, adversarial: np.ndarray, fps: int = PREVIEW_FPS,
                 scale: int = PREVIEW_SCALE) -> bytes:
    """Clean | adversarial side by side as VP9 WebM. Lossy (4:2:0, quantised): for looking only."""
    import av

    frames = np.concatenate([clean, np.full_like(clean[:, :, :4], 255), adversarial], axis=2)
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    height, width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2  # 4:2:0 needs even sizes
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "30", "b:v": "0", "deadline": "realtime", "cpu-used": "8"}
        for frame in frames[:, :height, :width]:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame),
                                                                   format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def frame_bars_svg(values: list[float], width: int = 640, height: int = 120) -> str:
    """Per-frame bars (mean |δ| per frame); perturbed frames in red, untouched ones marked with a grey tick.

    Each bar carries its frame and exact value as data attributes, so tests and scripts can read them.
    """
    count = max(len(values), 1)
    top = max(values, default=0.0) or 1.0
    slot = width / count
    bars = []
    for index, value in enumerate(values):
        bar_height = 0 if value == 0 else max(2.0, (height - 30) * value / top)  # room for the label
        x = index * slot + slot * 0.15
        colour = "#d62728" if value > 0 else "#bbb"
        shown_height = bar_height if value > 0 else 2
        bars.append(
            f'<rect class="frame-bar" data-frame="{index}" data-value="{value!r}" x="{x:.1f}" '
            f'y="{height - 14 - shown_height:.1f}" width="{slot * 0.7:.1f}" height="{shown_height:.1f}" '
            f'fill="{colour}"><title>frame {index}: mean |δ| {value:.3f}</title></rect>'
            f'<text x="{index * slot + slot / 2:.1f}" y="{height - 2}" font-size="10" '
            f'text-anchor="middle">{index}</text>'
        )
    label = escape(f"largest {top:.3f}" if any(values) else "no frame perturbed")
    return (f'<svg class="frame-bars" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'aria-label="mean absolute perturbation per frame">'
            f'<text x="2" y="10" font-size="10" fill="#555">{label}</text>{"".join(bars)}</svg>')


def stride_for(total: int, points: int) -> int:
    """Every how many queries to sample so a curve of `total` queries has at most about `points` points."""
    return max(1, math.ceil(total / max(points, 1)))
