"""Targeted score-based attacks under a top-1 oracle: the shrinking ball, written once.

A top-1 oracle shows p(target) only while the target is top-1, so a targeted score-based attack
cannot climb towards the target from the clean clip. It starts instead from an attacker-owned clip of
the target class at a large ε (base.targeted_start) and shrinks the L∞ ball around the clean clip
while its steps keep the target top-1: Ilyas et al.'s partial-information scheme with k = 1, in the
form V-BAD gives it (its Algorithm 1 and Sec. 4.1). V-BAD, AstFocus and NES+PGD share it; each
supplies its own gradient estimate. After the estimate, one iteration:

1. tries the step inside the smaller ball ε − Δε; if the target stays top-1, x and ε move there;
2. otherwise tries the same step at the current ε, and keeps it if the target stays top-1.

Step 2 is what lets x gain margin at a fixed ε. Without it, once Δε is down to one level, every
iteration whose shrink fails throws its estimate away, and a run stalls far above the goal ε (the
grid's first targeted AstFocus rows did; BENCHMARKS.md). `shrink_to_goal` is the loop: an attack
passes its gradient estimate, and AstFocus also a `learn` hook for its agents' rewards.

Schedules (V-BAD Sec. 4.1: α halves "if the ratio of failing to maintain the adversarial class is
higher than 50%", Δε halves "if we fail to reduce ε after 100 times"): α halves when more than half of
the last `failure_window` same-ε tries lost the target; Δε halves after `decay_patience` consecutive
failed reductions; both stop at one uint8 level.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from pydantic import ConfigDict, Field

from model_server.protocol import Prediction
from worker.attacks.base import AttackContext, AttackParams, targeted_start
from worker.attacks.primitives import in_levels, project_linf, to_levels

# (x, ε in levels) → (the attack's gradient estimate of its loss at x, what the estimate chose:
# AstFocus's focus, else None)
Estimate = Callable[[np.ndarray, int], tuple[np.ndarray, Any]]
# (what the estimate chose, goal score of x before the step, goal score of the last try's answer)
Learn = Callable[[Any, float, float], None]


def _schedule_fields_last(schema: dict[str, Any]) -> None:
    """GET /attacks lists an attack's own parameters first; pydantic would put inherited ones first."""
    properties = schema.get("properties", {})
    own_first = sorted(properties, key=lambda name: name in _SCHEDULE_FIELDS)
    schema["properties"] = {name: properties[name] for name in own_first}


class ShrinkingBallParams(AttackParams):
    """The loop's parameters, shared by every attack that uses it (each attack overrides the first
    three with its own defaults and wording)."""

    model_config = ConfigDict(json_schema_extra=_schedule_fields_last)

    epsilon: float = Field(0.05, gt=0, le=1, description="L∞ bound on [0, 1]; targeted: the goal ε.")
    learning_rate: float = Field(0.01, gt=0, le=0.5, description="PGD step α on [0, 1].")
    max_iterations: int = Field(100_000, ge=1, description="PGD steps at most (the budget also stops it).")
    targeted_start_epsilon: float = Field(1.0, gt=0, le=1, description="Targeted: ε of the starting clip.")
    epsilon_decay: float = Field(
        0.02, gt=0, le=0.5, description="Targeted: initial Δε (ε shrink per step) on [0, 1]; "
        "unspecified by V-BAD."
    )
    decay_patience: int = Field(100, ge=1, description="Targeted: failed ε reductions before Δε halves.")
    failure_window: int = Field(
        10, ge=2, description="Targeted: recent same-ε tries over which α's 50% rule counts."
    )
    reference_scan: int = Field(8, ge=1, le=256, description="Targeted: reference clips scanned for a start.")


_SCHEDULE_FIELDS = frozenset(ShrinkingBallParams.model_fields) - {
    "seed", "epsilon", "learning_rate", "max_iterations"
}


@dataclass
class ShrinkSchedule:
    """α and Δε in uint8 levels, never below one level, and what the tries did (for the trace)."""

    alpha: float
    decay: int
    patience: int
    window: int
    counts: dict[str, int] = field(
        default_factory=lambda: {"shrinks": 0, "same_eps_kept": 0, "same_eps_lost": 0}
    )

    def __post_init__(self) -> None:
        self.failed_shrinks = 0
        self.recent: list[bool] = []

    @classmethod
    def from_params(cls, params: ShrinkingBallParams) -> ShrinkSchedule:
        return cls(alpha=in_levels(params.learning_rate), decay=max(1, to_levels(params.epsilon_decay)),
                   patience=params.decay_patience, window=params.failure_window)

    def shrink_succeeded(self) -> None:
        self.failed_shrinks = 0
        self.counts["shrinks"] += 1

    def shrink_failed(self) -> None:
        self.failed_shrinks += 1
        if self.failed_shrinks >= self.patience:
            self.decay, self.failed_shrinks = max(1, self.decay // 2), 0

    def step_tried(self, kept: bool) -> None:
        self.counts["same_eps_kept" if kept else "same_eps_lost"] += 1
        self.recent = [*self.recent[-(self.window - 1):], kept]
        if len(self.recent) == self.window and self.recent.count(False) > self.window / 2:
            self.alpha, self.recent = max(1.0, self.alpha / 2), []

    def trace(self, eps: int) -> dict:
        return {"epsilon_levels": eps, "alpha_levels": self.alpha, "decay_levels": self.decay, **self.counts}


def try_in_ball(
    ctx: AttackContext, candidate: np.ndarray, eps: int, goal_eps: int
) -> tuple[bool, Prediction]:
    """One counted query; a candidate that keeps the target is offered to the tracker at its ε."""
    answer = ctx.oracle.query(candidate[None])[0]
    kept = ctx.goal.is_met(answer["label"])
    if kept:
        ctx.tracker.offer(
            candidate, ctx.goal.score(answer), success=eps <= goal_eps, answer=answer, distance=eps
        )
    return kept, answer


def shrink_or_step(ctx: AttackContext, x: np.ndarray, stepped: np.ndarray, eps: int, goal_eps: int,
                   schedule: ShrinkSchedule) -> tuple[np.ndarray, int, bool, Prediction]:
    """Steps 1-2 above for one gradient step: (x, ε, whether the target was kept, the last answer)."""
    reduced = max(goal_eps, eps - schedule.decay)
    candidate = project_linf(stepped, ctx.clean, reduced)
    kept, answer = try_in_ball(ctx, candidate, reduced, goal_eps)
    if kept:
        schedule.shrink_succeeded()
        return candidate, reduced, True, answer
    schedule.shrink_failed()
    candidate = project_linf(stepped, ctx.clean, eps)
    kept, answer = try_in_ball(ctx, candidate, eps, goal_eps)
    schedule.step_tried(kept)
    return (candidate if kept else x), eps, kept, answer


class Start(NamedTuple):
    clip: np.ndarray
    epsilon: int
    score: float


def start_in_target_class(ctx: AttackContext, params: ShrinkingBallParams, attack: str) -> Start | None:
    """The target-class clip at `targeted_start_epsilon` (base.targeted_start); None, traced, if no
    scanned reference clip is classified as the target."""
    clip, eps, score = targeted_start(
        ctx, to_levels(params.targeted_start_epsilon), params.reference_scan, attack
    )
    if clip is None:
        ctx.trace["stopped"] = "no reference clip was classified as the target"
        return None
    return Start(clip, eps, score)


def shrink_to_goal(ctx: AttackContext, params: ShrinkingBallParams, start: Start, estimate: Estimate,
                   learn: Learn | None = None) -> None:
    """V-BAD's Algorithm 1 loop from `start` until ε reaches the goal, the iterations or the budget end."""
    x, eps, score = start
    goal_eps = to_levels(params.epsilon)
    schedule = ShrinkSchedule.from_params(params)
    for iteration in range(1, params.max_iterations + 1):
        ctx.trace.update(schedule.trace(eps))
        if eps <= goal_eps:
            return
        ctx.trace["iterations"] = iteration  # estimates begun, as in the untargeted loops
        gradient, chosen = estimate(x, eps)
        stepped = x - schedule.alpha * np.sign(gradient)
        x, eps, kept, answer = shrink_or_step(ctx, x, stepped, eps, goal_eps, schedule)
        new_score = ctx.goal.score(answer)
        if learn is not None:
            learn(chosen, score, new_score)
        score = new_score if kept else score
    ctx.trace.update(schedule.trace(eps))
