"""Pieces several attacks share, written once: the uint8 L∞ projection and the NES estimator (noise,
samples, their counted query, the estimate).

Clips live on the uint8 grid the oracle sees (DESIGN.md, "quantize inside the loop"): ε and step sizes
are given on [0, 1] like in the papers and turned into whole pixel levels here.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from model_server.protocol import Prediction
    from worker.attacks.base import AttackContext

LEVELS = 255.0


def to_levels(value: float) -> int:
    """A [0, 1] magnitude as whole uint8 levels (rounded down, so ε is never exceeded)."""
    return int(np.floor(value * LEVELS + 1e-6))


def in_levels(value: float) -> float:
    """A [0, 1] step size in uint8 levels, kept fractional (the projection rounds)."""
    return value * LEVELS


def linf_ball(clean: np.ndarray, eps_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest uint8 level of every pixel within eps_levels of `clean`."""
    wide = clean.astype(np.int16)
    return np.clip(wide - eps_levels, 0, 255), np.clip(wide + eps_levels, 0, 255)


def project_linf(x: np.ndarray, clean: np.ndarray, eps_levels: int) -> np.ndarray:
    """Round to the uint8 grid, then clip into the L∞ ball of radius eps_levels around `clean`."""
    low, high = linf_ball(clean, eps_levels)
    return np.clip(np.rint(x), low, high).astype(np.uint8)


def antithetic_noise(rng: np.random.Generator, shape: tuple[int, ...], pairs: int,
                     mask: np.ndarray | None = None) -> np.ndarray:
    """Gaussian directions u_1..u_n, each followed by its negation: [u1, -u1, u2, -u2, …].

    Interleaving keeps whole pairs at the front, so a batch shrunk to the last queries of the budget
    still yields a usable estimate. `mask` (broadcast to `shape`) zeroes the directions outside it
    before the negations are made: bit for bit the same directions as masking the result, with one
    clip-sized product per pair instead of two.
    """
    half = rng.standard_normal((pairs, *shape), dtype=np.float32)
    if mask is not None:
        half *= mask
    return np.stack([half, -half], axis=1).reshape(2 * pairs, *shape)


def probe_samples(x: np.ndarray, clean: np.ndarray, eps: int, probe: float,
                  directions: Iterable[np.ndarray]) -> np.ndarray:
    """x + probe·u for every direction u, each projected into the ε ball on the uint8 grid."""
    low, high = linf_ball(clean, eps)  # once per batch, not once per direction as project_linf would
    return np.stack([np.clip(np.rint(x + probe * u), low, high).astype(np.uint8) for u in directions])


def offer_candidate(ctx: AttackContext, clip: np.ndarray) -> tuple[bool, float, Prediction]:
    """One counted query of an iterate, offered to the tracker (a success if it meets the goal):
    (whether it met the goal, its goal score, the answer)."""
    answer = ctx.oracle.query(clip[None])[0]
    met, score = ctx.goal.is_met(answer["label"]), ctx.goal.score(answer)
    ctx.tracker.offer(clip, score, success=met, answer=answer)
    return met, score, answer


class SampleScores(NamedTuple):
    losses: np.ndarray  # −goal score of each answered sample (the budget may answer fewer than were sent)
    met: np.ndarray  # whether each answered sample met the goal


def score_samples(ctx: AttackContext, samples: np.ndarray, stop_when_met: bool) -> SampleScores | None:
    """Query NES samples as one batch (cut short by the budget rather than refused).

    With `stop_when_met`, the first sample that meets the goal is offered to the tracker as the
    success and None is returned: the attack is over, the estimate moot. Targeted attacks that must
    also shrink ε (shrinking_ball.py) keep going instead.
    """
    answers = ctx.oracle.query(samples, partial=True)
    losses = np.empty(len(answers), dtype=np.float32)
    met = np.zeros(len(answers), dtype=bool)
    for i, answer in enumerate(answers):
        score, met[i] = ctx.goal.score(answer), ctx.goal.is_met(answer["label"])
        if met[i] and stop_when_met:
            ctx.tracker.offer(samples[i], score, success=True, answer=answer)
            return None
        losses[i] = -score
    return SampleScores(losses, met)


def rank_transform(losses: np.ndarray) -> np.ndarray:
    """Centred ranks in [-0.5, 0.5]: NES with fitness shaping (used by V-BAD's rectification)."""
    ranks = np.empty(len(losses), dtype=np.float32)
    ranks[np.argsort(losses, kind="stable")] = np.arange(len(losses), dtype=np.float32)
    return ranks / max(len(losses) - 1, 1) - 0.5


def nes_gradient(losses: np.ndarray, noise: np.ndarray, sigma: float) -> np.ndarray:
    """Antithetic NES estimate of ∇loss: (1 / (n σ)) Σ_i loss(x + σ u_i) u_i over complete pairs.

    `losses` may be shorter than `noise` when the budget cut the batch; an unpaired tail is dropped
    because a lone sample biases the estimate by its loss level.
    """
    usable = (len(losses) // 2) * 2
    if usable == 0:
        return np.zeros(noise.shape[1:], dtype=np.float32)
    weights = np.asarray(losses[:usable], dtype=np.float32)
    return np.tensordot(weights, noise[:usable], axes=1) / (usable * sigma)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the RL agents' small networks (AstFocus, RLSB): on this 2-core service
    extra threads cost more than they give (AstFocus's updates ran 6× slower with 2)."""
    import torch  # here, not at import: the API imports the attack registry and needs no torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
