"""Perturbation metrics, one definition each (DESIGN.md, "Metrics"). Clips are uint8 T×H×W×3."""
from __future__ import annotations

import numpy as np


def perturbation(adversarial: np.ndarray, clean: np.ndarray) -> np.ndarray:
    return adversarial.astype(np.int16) - clean.astype(np.int16)


def mean_absolute_perturbation(delta: np.ndarray) -> float:
    """MAP: mean |δ| per pixel value on the 0-255 scale (the papers' Eq. 15)."""
    return float(np.abs(delta).mean())


def perturbed_pixels(delta: np.ndarray) -> np.ndarray:
    """T×H×W mask of pixels with any channel changed."""
    return np.any(delta != 0, axis=-1)


def sparsity(delta: np.ndarray) -> float:
    """Fraction of pixels (over all frames) left untouched."""
    return float(1.0 - perturbed_pixels(delta).mean())


def frames_perturbed(delta: np.ndarray) -> int:
    return int(perturbed_pixels(delta).reshape(len(delta), -1).any(axis=1).sum())


def psnr(delta: np.ndarray) -> float | None:
    mse = float(np.mean(delta.astype(np.float64) ** 2))
    return None if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ssim(adversarial: np.ndarray, clean: np.ndarray) -> float:
    """Mean SSIM over frames (colour, 0-255 data range)."""
    from skimage.metrics import structural_similarity

    values = [
        structural_similarity(a, c, channel_axis=-1, data_range=255)
        for a, c in zip(adversarial, clean, strict=True)
    ]
    return float(np.mean(values))


def perturbation_metrics(adversarial: np.ndarray, clean: np.ndarray) -> dict[str, float | int | None]:
    delta = perturbation(adversarial, clean)
    return {
        "map": mean_absolute_perturbation(delta),
        "linf": int(np.abs(delta).max()),  # levels of 255
        "linf_unit": float(np.abs(delta).max() / 255.0),
        "l2": float(np.linalg.norm(delta.astype(np.float64) / 255.0)),
        "sparsity": sparsity(delta),
        "frames_perturbed": frames_perturbed(delta),
        "frames": int(len(delta)),
        "psnr": psnr(delta),
        "ssim": ssim(adversarial, clean),
    }
