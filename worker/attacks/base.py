"""What every attack shares: the goal (criterion), the best-so-far tracker and the attack interface.

Top-1 only (DESIGN.md): the oracle gives the top-1 label and its probability, nothing else. The goal
turns one answer into a scalar `score` in [-1, 1], higher is better, positive exactly when the goal is
met:
- untargeted: -p(source) while the source class is top-1; +p(top-1) once another class is top-1;
- targeted:   +p(target) when the target is top-1; -p(top-1) otherwise (the only information a top-1
  oracle gives is how confident the wrong class is).
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from model_server.protocol import Prediction


@dataclass(frozen=True)
class Goal:
    source_label: int
    target_label: int | None = None

    @property
    def targeted(self) -> bool:
        return self.target_label is not None

    def is_met(self, label: int) -> bool:
        if self.targeted:
            return label == self.target_label
        return label != self.source_label

    def score(self, answer: Prediction) -> float:
        met = self.is_met(answer["label"])
        return answer["probability"] if met else -answer["probability"]


class Oracle(Protocol):
    """What an attack sees of the oracle client (worker/oracle_client.py)."""

    def query(self, clips: np.ndarray, partial: bool = False) -> list[Prediction]: ...

    @property
    def remaining(self) -> int: ...


@dataclass
class Best:
    clip: np.ndarray
    score: float
    success: bool
    answer: Prediction | None = None
    # The perturbation the attack shrinks: the MAP of an adversarial clip (decision-based attacks), the
    # L∞ ε in levels of a clip that keeps the target (targeted score-based attacks, Algorithm 1).
    distance: float | None = None


@dataclass
class Tracker:
    """Keeps the best clip seen so far; a success always beats a non-success.

    Between two offers of equal success that both carry a `distance` (decision-based attacks, which
    start adversarial and shrink the perturbation; targeted score-based attacks, which start at a
    target-class clip and shrink ε), the smaller distance wins, then the higher score; otherwise the
    higher score. Without the distance rule a targeted run's best would stay its ε = 1 start, which
    has the target's highest probability.

    Attacks offer every answered clip they consider a result; `on_improve` lets the worker persist
    progress and checkpoints without the attack knowing about the database.
    """

    best: Best
    on_improve: Callable[[Best], None] = lambda best: None
    history: list[tuple[int, float]] = field(default_factory=list)  # (queries, best score)
    started: float = field(default_factory=time.monotonic)

    def offer(self, clip: np.ndarray, score: float, success: bool, answer: Prediction | None = None,
              distance: float | None = None) -> bool:
        current = self.best
        if success == current.success and distance is not None and current.distance is not None:
            better = (-distance, score) > (-current.distance, current.score)
        else:
            better = (success, score) > (current.success, current.score)
        if better:
            self.best = Best(clip=clip.copy(), score=score, success=success, answer=answer, distance=distance)
            self.on_improve(self.best)
        return better


def job_succeeded(label_met: bool, best: Best) -> bool:
    """A job succeeds when the oracle puts its final clip where the goal demands (DESIGN.md's FR) and
    the attack's own criterion holds for that clip (`best.success`).

    The two differ only for targeted score-based attacks: their clip keeps the target from the first
    query (a target-class clip at ε = 1), and V-BAD counts a success only "under the perturbation
    bound" (its Sec. 4.1): ε shrunk to the goal ε. `label_met` stays in the metrics beside it.
    """
    return label_met and best.success


@dataclass
class AttackContext:
    clean: np.ndarray  # T×H×W×3 uint8, the clip as the oracle saw it first
    oracle: Oracle
    goal: Goal
    tracker: Tracker
    rng: np.random.Generator
    # Attacker-owned clips of a class (the reference set), e.g. to start a targeted attack.
    reference_clips: Callable[[int, int], np.ndarray] | None = None
    # A checkpointed clip to resume from after a redelivery (None on a first run).
    resume_from: np.ndarray | None = None
    # The victim's model name: only for reports (e.g. which surrogate shares weights with it).
    victim: str = ""
    # What the attack wants in the job's report (iterations, schedules, agents' choices); JSON-able.
    trace: dict = field(default_factory=dict)


class AttackParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(
        0, ge=0, le=2**63 - 1, description="Seed of the attack's random choices: same seed, same queries."
    )


class Attack(ABC):
    """An attack is a small object: validated parameters plus `run`, which reports via the tracker."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[AttackParams]]

    def __init__(self, params: AttackParams) -> None:
        self.params = params

    @abstractmethod
    def run(self, ctx: AttackContext) -> None:
        """Run until the goal is met or the attack ends; BudgetExhausted/JobCancelled may escape."""


def targeted_start(
    ctx: AttackContext, start_eps: int, scan: int, attack: str
) -> tuple[np.ndarray | None, int, float]:
    """Where a targeted attack starts under a top-1 oracle: (clip, ε in levels, its goal score).

    The first of `scan` attacker-owned clips of the target class that the oracle puts in the target
    class, projected into the `start_eps` ball around the clean clip (every scan query is counted);
    after a redelivery, the checkpointed clip at its own ε. (None, …) when no scanned clip works.
    """
    from worker.attacks.primitives import project_linf

    if ctx.resume_from is not None:
        eps = int(np.abs(ctx.resume_from.astype(np.int16) - ctx.clean).max())
        return ctx.resume_from, eps, ctx.tracker.best.score
    if ctx.reference_clips is None:
        raise ValueError(f"targeted {attack} needs attacker-owned clips of the target class for this model")
    for clip in ctx.reference_clips(ctx.goal.target_label, scan):
        start = project_linf(clip.astype(np.float32), ctx.clean, start_eps)
        answer = ctx.oracle.query(start[None])[0]
        if ctx.goal.is_met(answer["label"]):
            score = ctx.goal.score(answer)
            ctx.tracker.offer(start, score, success=False, answer=answer, distance=start_eps)
            return start, start_eps, score
    return None, start_eps, 0.0
