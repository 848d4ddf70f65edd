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
        "frames": len(delta),
        "psnr": psnr(delta),
        "ssim": ssim(adversarial, clean),
    }


# --- outcomes of many attacks (campaign reports, the benchmark table) -----------------------------------

SUCCESS_CURVE_POINTS = 50


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def summarize_outcomes(outcomes: list[dict]) -> dict:
    """One attack's row of a report from its jobs' outcomes.

    Each outcome: `success` (bool), `queries`, and the perturbation metrics of its final clip (`map`,
    `linf`, `sparsity`, `frames_perturbed`, `ssim`), `seconds`. FR is over every outcome (an attack
    that errs on a clip has failed it); queries are given over successes and over all clips, as the
    AstFocus paper argues (Sec. 4.2): a mean over successes alone rewards giving up early.
    """
    wins = [o for o in outcomes if o["success"]]
    won_queries = [o["queries"] for o in wins]
    total_seconds = sum(o.get("seconds") or 0.0 for o in outcomes)

    def mean_of(key: str) -> float | None:
        return _mean([o[key] for o in outcomes if o.get(key) is not None])

    return {
        "clips": len(outcomes),
        "successes": len(wins),
        "fooling_rate": len(wins) / len(outcomes) if outcomes else None,
        "queries_mean_successes": _mean(won_queries),
        "queries_median_successes": _median(won_queries),
        "queries_mean_all": _mean([o["queries"] for o in outcomes]),
        "queries_median_all": _median([o["queries"] for o in outcomes]),
        "map": mean_of("map"),
        "linf": mean_of("linf"),
        "sparsity": mean_of("sparsity"),
        "frames_perturbed": mean_of("frames_perturbed"),
        "ssim": mean_of("ssim"),
        "seconds_mean": mean_of("seconds"),
        "queries_per_s": sum(o["queries"] for o in outcomes) / total_seconds if total_seconds else None,
    }


def success_curve(
    outcomes: list[dict], budget: int, points: int = SUCCESS_CURVE_POINTS
) -> list[tuple[int, float]]:
    """Fraction of clips fooled within q queries, for q on a grid up to the budget (V-BAD's Fig. 4)."""
    if not outcomes:
        return []
    grid = np.unique(np.linspace(0, budget, points + 1).round().astype(int))
    won = np.array([o["queries"] for o in outcomes if o["success"]])
    return [(int(q), float((won <= q).sum() / len(outcomes))) for q in grid]
