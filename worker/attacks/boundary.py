"""The hard-label pieces every decision-based attack shares (written once, DESIGN.md "Attacks").

Cheng et al. 2018 ("Query-efficient hard-label black-box attack: an optimization-based approach",
OPT) turn a hard-label attack into minimising g(θ), the distance from the clean clip x to the decision
boundary along a unit direction θ:

    g(θ) = min { λ > 0 : x + λ θ meets the goal }         (RLSB Eq. 10; OPT Eq. 3)

evaluated by a coarse search that brackets the boundary and a binary search inside the bracket, one
query per step. Here:

- Distances are on [0, 1] pixel values (like the papers), θ has unit L2 norm over the whole clip, and
  every point x + λθ is rounded onto the uint8 grid (and clipped to [0, 255]) BEFORE it is sent, so the
  clip that answered "adversarial" is exactly the clip that is kept.
- The upper end of a bracket is always a point the oracle answered adversarial, so g(θ) returned is
  achieved, never extrapolated; every adversarial answer is offered to the tracker at once, ranked by
  its MAP, so when the budget ends in the middle of a search (BudgetExhausted escapes from the oracle)
  the best clip found so far is already kept. That is the clean stop the job needs.
- The binary search stops when the bracket is narrower than `tolerance` × its upper end (relative: a
  video's distance is ~10-100× an image's, so Cheng's absolute 1e-5 would cost several extra queries
  per search). It must stay well below the relative change a smoothing step β makes in g, or the
  finite differences of OPT are noise: 1e-4 by default. (A coarser stop, where the largest pixel no
  longer moves by half a level, made OPT's first line search fail on every try in a probe: on a
  16-frame clip that is ~1 % of g, more than β = 0.005 changes it.)
- `mask` (broadcastable to the clip, values in {0, 1}) confines directions to a sparse support: the
  temporal/spatial masks of the Heuristic and RLSB attacks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from model_server.protocol import Prediction
from worker.attacks.base import AttackContext
from worker.metrics import mean_absolute_perturbation, perturbation

INF = math.inf


def unit(direction: np.ndarray) -> tuple[np.ndarray, float]:
    """(direction / ‖direction‖, ‖direction‖); a zero direction stays zero with norm 0."""
    norm = float(np.linalg.norm(direction))
    return (direction / norm if norm > 0 else direction).astype(np.float32), norm


def unit_gaussian(rng: np.random.Generator, shape: tuple[int, ...], mask: np.ndarray | None) -> np.ndarray:
    """A random unit direction u (Cheng et al.'s u/‖u‖), restricted to the mask's support."""
    u = rng.standard_normal(shape, dtype=np.float32)
    if mask is not None:
        u *= mask
    return unit(u)[0]


@dataclass
class Boundary:
    """g(θ) against the job's oracle; counts its own queries and records the best-MAP curve."""

    ctx: AttackContext
    tolerance: float = 1e-4
    max_expansions: int = 60  # 1 % steps: the coarse search gives up beyond ~1.8× the start
    queries: int = 0
    best_map: float = INF
    curve: list[tuple[int, float]] = field(default_factory=list)  # (attack queries, best MAP)

    # ------------------------------------------------------------------ points and answers
    def point(self, theta: np.ndarray, lam: float) -> np.ndarray:
        """x + λθ on the uint8 grid (λ on [0, 1] pixel values)."""
        return np.clip(np.rint(self.ctx.clean + (255.0 * lam) * theta), 0, 255).astype(np.uint8)

    def adversarial(self, theta: np.ndarray, lam: float) -> bool:
        return self.adversarial_clips(self.point(theta, lam)[None])[0]

    def adversarial_clips(self, clips: np.ndarray, partial: bool = False) -> list[bool]:
        """Does each clip meet the goal? One query each; adversarial ones go to the tracker by MAP."""
        return [self.ctx.goal.is_met(answer["label"]) for answer in self.ask(clips, partial)]

    def ask(self, clips: np.ndarray, partial: bool = False) -> list[Prediction]:
        """The oracle's answers for clips (fewer with `partial` at the budget's end), counted and offered."""
        answers = self.ctx.oracle.query(clips, partial=partial)
        self.queries += len(answers)
        for clip, answer in zip(clips, answers, strict=False):
            if self.ctx.goal.is_met(answer["label"]):
                self._offer(clip, answer)
        return answers

    def _offer(self, clip: np.ndarray, answer: Prediction) -> None:
        distortion = mean_absolute_perturbation(perturbation(clip, self.ctx.clean))
        self.ctx.tracker.offer(
            clip, self.ctx.goal.score(answer), success=True, answer=answer, distance=distortion
        )
        if distortion < self.best_map:
            self.best_map = distortion
            self.curve.append((self.queries, round(distortion, 4)))

    # ------------------------------------------------------------------ g(θ)
    def distance(self, theta: np.ndarray, start: float, current_best: float = INF) -> float:
        """g(θ) for a new direction whose point at `start` is known to be adversarial.

        OPT's initial search: a direction that is not adversarial at the best distance found so far
        cannot beat it, so one query rules it out (returns inf); otherwise binary search from 0.
        """
        high = start
        if current_best < start:
            if not self.adversarial(theta, current_best):
                return INF
            high = current_best
        return self._bisect(theta, 0.0, high)

    def local_distance(self, theta: np.ndarray, guess: float) -> float:
        """g(θ) near a known distance (θ changed a little): bracket in 1 % steps, then bisect."""
        if self.adversarial(theta, guess):
            high, low = guess, guess * 0.99
            while self.adversarial(theta, low):
                high, low = low, low * 0.99
                if low <= 0:
                    return high
            return self._bisect(theta, low, high)
        low, high = guess, guess * 1.01
        for _ in range(self.max_expansions):
            if self.adversarial(theta, high):
                return self._bisect(theta, low, high)
            low, high = high, high * 1.01
        return INF

    def _bisect(self, theta: np.ndarray, low: float, high: float) -> float:
        """Shrink [low, high] (high adversarial, low not) until it is too narrow to matter."""
        while high - low > self.tolerance * high:
            middle = (low + high) / 2
            if self.adversarial(theta, middle):
                high = middle
            else:
                low = middle
        return high

    def map_at(self, theta: np.ndarray, lam: float) -> float:
        """MAP of the point x + λθ, the quantity the papers bound (computed locally, no query)."""
        return mean_absolute_perturbation(perturbation(self.point(theta, lam), self.ctx.clean))


def line_search(boundary: Boundary, theta: np.ndarray, g: float, step: np.ndarray, alpha: float,
                mask: np.ndarray | None = None, tries: int = 15) -> tuple[np.ndarray, float, float]:
    """Cheng et al.'s backtracking step along −`step`: (θ', g(θ'), α').

    Grow α (×2) while g keeps falling; if the first step does not lower g, shrink α (×¼) until one
    does. Returns θ unchanged (with its g) when nothing lower is found.
    """
    best_theta, best_g = theta, g
    for _ in range(tries):
        candidate = _stepped(theta, step, alpha, mask)
        candidate_g = boundary.local_distance(candidate, best_g)
        alpha *= 2
        if candidate_g < best_g:
            best_theta, best_g = candidate, candidate_g
        else:
            break
    if best_g >= g:
        for _ in range(tries):
            alpha *= 0.25
            candidate = _stepped(theta, step, alpha, mask)
            candidate_g = boundary.local_distance(candidate, g)
            if candidate_g < g:
                best_theta, best_g = candidate, candidate_g
                break
    return best_theta, best_g, alpha


def _stepped(theta: np.ndarray, step: np.ndarray, alpha: float, mask: np.ndarray | None) -> np.ndarray:
    moved = theta - alpha * step
    if mask is not None:
        moved = moved * mask
    return unit(moved)[0]
