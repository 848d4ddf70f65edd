"""Saliency masks: where in a frame the sparse attacks may perturb (OpenCV contrib's saliency module).

- Spectral residual (Hou & Zhang 2007): the Heuristic attack's spatial prior.
- Fine-grained (Montabone & Soto 2010, center-surround differences): RLSB's (its Eq. 1).

`salient_mask(clip, φ)` keeps, in every frame, the φ fraction of pixels with the highest saliency
(the papers' "area ratio of the salient region", φ ∈ (0, 1]); ties are broken by pixel order, so a
mask is a deterministic function of the clip. Masks are float32 T×H×W×1 in {0, 1}, broadcastable over
the colour channels of a clip.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

SaliencyMethod = Literal["spectral_residual", "fine_grained"]


def saliency_map(frame: np.ndarray, method: SaliencyMethod) -> np.ndarray:
    """H×W float32 saliency of one RGB uint8 frame."""
    import cv2

    detector = (cv2.saliency.StaticSaliencySpectralResidual_create() if method == "spectral_residual"
                else cv2.saliency.StaticSaliencyFineGrained_create())
    ok, result = detector.computeSaliency(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"OpenCV {method} saliency failed on a {frame.shape} frame")
    return np.asarray(result, dtype=np.float32)


def top_fraction(values: np.ndarray, ratio: float) -> np.ndarray:
    """{0, 1} mask of the ceil(ratio × size) largest values (stable order on ties)."""
    flat = values.ravel()
    keep = min(flat.size, max(1, int(np.ceil(ratio * flat.size))))
    mask = np.zeros(flat.size, dtype=np.float32)
    mask[np.argsort(-flat, kind="stable")[:keep]] = 1.0
    return mask.reshape(values.shape)


def salient_mask(clip: np.ndarray, ratio: float, method: SaliencyMethod) -> np.ndarray:
    """T×H×W×1 mask of each frame's most salient `ratio` of pixels; ratio 1 keeps everything."""
    if ratio >= 1.0:
        return np.ones((*clip.shape[:3], 1), dtype=np.float32)
    return np.stack([top_fraction(saliency_map(frame, method), ratio) for frame in clip])[..., None]


def frame_mask(frames: int, kept: set[int] | list[int]) -> np.ndarray:
    """T×1×1×1 mask of the kept frames (the temporal part of a sparse attack's mask)."""
    mask = np.zeros((frames, 1, 1, 1), dtype=np.float32)
    mask[sorted(kept)] = 1.0
    return mask
