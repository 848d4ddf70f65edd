"""Dense NES + PGD (Ilyas, Engstrom, Athalye, Lin, ICML 2018, "Black-box adversarial attacks with
limited queries and information"), applied to every pixel of every frame.

Untargeted (the paper's query-limited setting): from the clean clip, estimate ∇loss with antithetic
NES, step x ← Π_ε(x − η·sign(g)), repeat. Targeted under a top-1 oracle (the paper's
partial-information setting with k = 1): start from an attacker-owned clip of the target class at a
large ε, then after every NES estimate try the step in a smaller ball around the clean clip, else the
same step at the current ε (attacks/shrinking_ball.py, shared with V-BAD and AstFocus); success is the
target held at top-1 once ε reaches the requested bound.

Top-1 adaptation: the loss is −score of attacks/base.Goal (−p(source) … +p(top-1)). Quantization: each
sample x + σu is rounded to uint8 and projected before it is sent, so σ and η must be at least one
level (1/255); the paper's σ = 0.001 would round away, hence σ = 0.01 here. Every sample that meets
the goal ends the attack: it is a valid adversarial clip inside the ball.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import Field

from worker.attacks.base import Attack, AttackContext
from worker.attacks.primitives import (
    antithetic_noise,
    in_levels,
    nes_gradient,
    offer_candidate,
    probe_samples,
    project_linf,
    score_samples,
    to_levels,
)
from worker.attacks.shrinking_ball import ShrinkingBallParams, shrink_to_goal, start_in_target_class


class NesPgdParams(ShrinkingBallParams):
    epsilon: float = Field(0.05, gt=0, le=1, description="L∞ bound on [0, 1] (12 of 255 levels).")
    sigma: float = Field(0.01, gt=0, le=0.5, description="NES search variance on [0, 1].")
    population: int = Field(48, ge=2, le=480, description="NES samples per estimate (antithetic pairs × 2).")
    learning_rate: float = Field(0.01, gt=0, le=0.5, description="PGD sign-step size η on [0, 1].")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum on the gradient estimate (0 = off).")
    max_iterations: int = Field(
        10_000, ge=1, description="PGD iterations at most (the budget also stops it)."
    )


class NesPgd(Attack):
    name = "nes_pgd"
    description = "Dense NES gradient estimate + L∞ PGD sign steps on every pixel (Ilyas et al. 2018)."
    Params = NesPgdParams
    params: NesPgdParams

    def run(self, ctx: AttackContext) -> None:
        if ctx.goal.targeted:
            self._run_targeted(ctx)
        else:
            self._run_untargeted(ctx)

    # ------------------------------------------------------------------ untargeted
    def _run_untargeted(self, ctx: AttackContext) -> None:
        p = self.params
        eps = to_levels(p.epsilon)
        x = ctx.clean if ctx.resume_from is None else ctx.resume_from
        momentum_sign_pgd(ctx, x, eps, lambda x: self._estimate(ctx, x, eps), in_levels(p.learning_rate),
                          p.momentum, p.max_iterations, ctx.trace)

    # ------------------------------------------------------------------ targeted
    def _run_targeted(self, ctx: AttackContext) -> None:
        start = start_in_target_class(ctx, self.params, self.name)
        if start is not None:
            shrink_to_goal(ctx, self.params, start, lambda x, eps: (self._estimate(ctx, x, eps)[0], None))

    # ------------------------------------------------------------------ shared steps
    def _estimate(self, ctx: AttackContext, x: np.ndarray, eps: int) -> tuple[np.ndarray, bool]:
        """NES estimate of ∇loss at x; `done` when one of the samples already meets the goal."""
        p = self.params
        noise = antithetic_noise(ctx.rng, x.shape, p.population // 2)
        samples = probe_samples(x, ctx.clean, eps, in_levels(p.sigma), noise)
        scored = score_samples(ctx, samples, stop_when_met=not ctx.goal.targeted)
        if scored is None:
            return np.zeros_like(noise[0]), True
        return nes_gradient(scored.losses, noise, p.sigma), False


def momentum_sign_pgd(ctx: AttackContext, x: np.ndarray, eps: int,
                      estimate: Callable[[np.ndarray], tuple[np.ndarray, bool]], step: float, momentum: float,
                      max_iterations: int, trace: dict, keep: np.ndarray | float = 1.0) -> None:
    """v ← μ·v + ĝ, x ← Π_ε(x − η·sign(v)·keep) until a clip meets the goal (`estimate` says `done` when
    one of its samples did); each iterate costs one counted query. `keep` masks the step (the key-frame
    attack's finish)."""
    velocity = np.zeros(x.shape, dtype=np.float32)
    for iteration in range(1, max_iterations + 1):
        trace["iterations"] = iteration
        gradient, done = estimate(x)
        if done:
            return
        velocity = momentum * velocity + gradient
        x = project_linf(x - step * np.sign(velocity) * keep, ctx.clean, eps)
        if offer_candidate(ctx, x)[0]:
            return
