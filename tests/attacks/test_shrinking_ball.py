"""The targeted shrinking ball (attacks/shrinking_ball.py): V-BAD's Algorithm 1 and Sec. 4.1 schedule,
shared by V-BAD, AstFocus and NES+PGD. Pure logic against scripted answers."""
from __future__ import annotations

import numpy as np
import pytest

from model_server.protocol import Prediction
from worker.attacks.base import AttackContext, Best, Goal, Tracker
from worker.attacks.shrinking_ball import (
    ShrinkingBallParams,
    ShrinkSchedule,
    Start,
    shrink_or_step,
    shrink_to_goal,
    start_in_target_class,
)

CLEAN = np.full((2, 4, 4, 3), 100, dtype=np.uint8)
TARGET = 1


class ScriptedOracle:
    """Answers the target or not by a script, one entry per clip (with the answer's probability, 0.9 if
    not scripted); records the clips' L∞ radii."""

    def __init__(self, script: list[bool], probabilities: list[float] | None = None) -> None:
        self.script, self.radii = list(script), []
        self.probabilities = list(probabilities or [0.9] * len(script))

    def query(self, clips: np.ndarray, partial: bool = False) -> list[Prediction]:
        answers = []
        for clip in clips:
            self.radii.append(int(np.abs(clip.astype(np.int16) - CLEAN).max()))
            label = TARGET if self.script.pop(0) else 0
            answers.append(Prediction(label=label, label_name=str(label),
                                      probability=self.probabilities.pop(0)))
        return answers


def _context(oracle: ScriptedOracle) -> AttackContext:
    goal = Goal(source_label=0, target_label=TARGET)
    tracker = Tracker(best=Best(clip=CLEAN, score=-0.9, success=False))
    return AttackContext(clean=CLEAN, oracle=oracle, goal=goal, tracker=tracker, rng=np.random.default_rng(0),
                         reference_clips=lambda label, n: np.stack([CLEAN + 120] * n))


def _schedule() -> ShrinkSchedule:
    return ShrinkSchedule(alpha=4.0, decay=10, patience=100, window=10)


def test_a_step_that_keeps_the_target_in_the_smaller_ball_shrinks_epsilon():
    oracle = ScriptedOracle([True])
    x, stepped = CLEAN + 50, CLEAN.astype(np.float32) + 60
    new_x, eps, kept, _ = shrink_or_step(_context(oracle), x, stepped, 50, 12, _schedule())
    assert kept and eps == 40 and oracle.radii == [40]
    assert np.abs(new_x.astype(np.int16) - CLEAN).max() == 40


def test_a_failed_shrink_tries_the_same_step_at_the_current_epsilon_and_keeps_it():
    oracle = ScriptedOracle([False, True])
    x, stepped = CLEAN + 30, CLEAN.astype(np.float32) + 45
    schedule = _schedule()
    new_x, eps, kept, _ = shrink_or_step(_context(oracle), x, stepped, 50, 12, schedule)
    assert kept and eps == 50 and oracle.radii == [40, 45]  # two counted queries: ε − Δε, then ε
    assert np.array_equal(new_x, np.clip(stepped, 0, 255).astype(np.uint8))  # x moved at the same ε
    assert schedule.counts == {"shrinks": 0, "same_eps_kept": 1, "same_eps_lost": 0}


def test_when_both_tries_lose_the_target_x_stays():
    oracle = ScriptedOracle([False, False])
    x = CLEAN + 30
    new_x, eps, kept, answer = shrink_or_step(_context(oracle), x, CLEAN + 45.0, 50, 12, _schedule())
    assert not kept and eps == 50 and new_x is x and answer["label"] == 0


def test_epsilon_never_shrinks_below_the_goal():
    oracle = ScriptedOracle([True])
    tracker_ctx = _context(oracle)
    _, eps, _, _ = shrink_or_step(tracker_ctx, CLEAN + 15, CLEAN + 15.0, 15, 12, _schedule())
    assert eps == 12 and tracker_ctx.tracker.best.success  # reaching the goal ε is the success


def test_schedule_halves_alpha_on_mostly_failed_tries_and_decay_after_patience():
    schedule = ShrinkSchedule(alpha=8.0, decay=8, patience=3, window=4)
    for kept in (True, False, False, False):
        schedule.step_tried(kept)
    assert schedule.alpha == 4.0
    for _ in range(3):
        schedule.shrink_failed()
    assert schedule.decay == 4
    schedule.shrink_failed()
    schedule.shrink_succeeded()  # a success resets the count
    for _ in range(2):
        schedule.shrink_failed()
    assert schedule.decay == 4
    tiny = ShrinkSchedule(alpha=1.0, decay=1, patience=1, window=2)
    for _ in range(2):
        tiny.step_tried(False)
    tiny.shrink_failed()
    assert tiny.alpha == 1.0 and tiny.decay == 1  # never below one uint8 level



def test_alpha_halves_only_when_more_than_half_of_the_window_lost():
    """V-BAD Sec. 4.1: "higher than 50%" — exactly half lost keeps α."""
    schedule = ShrinkSchedule(alpha=8.0, decay=8, patience=3, window=4)
    for kept in (True, False, True, False):
        schedule.step_tried(kept)
    assert schedule.alpha == 8.0
    schedule.step_tried(False)  # the window slides to (lost, kept, lost, lost)
    assert schedule.alpha == 4.0

# ε from 40 levels down to the goal's 12 in steps of Δε = 10 levels; α = 2.55 levels
PARAMS = ShrinkingBallParams(epsilon=0.05, epsilon_decay=0.04, learning_rate=0.01)


def _climbing_estimate(calls: list[int]):
    """A gradient estimate that always points up (−1 everywhere) and says which call it was."""
    def estimate(x: np.ndarray, eps: int) -> tuple[np.ndarray, int]:
        calls.append(eps)
        return -np.ones(x.shape, dtype=np.float32), len(calls)
    return estimate


def test_the_loop_shrinks_to_the_goal_and_scores_only_what_it_kept():
    #       shrink→30  shrink→20, same ε 30: both lost   shrink→20 lost, 30 kept   →20   →12 (goal)
    oracle = ScriptedOracle([True, False, False, False, True, True, True],
                            [0.5, 0.3, 0.2, 0.3, 0.6, 0.7, 0.8])
    ctx, calls, learned = _context(oracle), [], []
    shrink_to_goal(ctx, PARAMS, Start(CLEAN + 40, 40, 0.4), _climbing_estimate(calls),
                   lambda chosen, before, after: learned.append((chosen, before, after)))
    assert oracle.radii == [30, 20, 30, 20, 30, 20, 12]  # every try is one counted query
    assert calls == [40, 30, 30, 30, 20]  # one estimate per iteration, at the current ε
    assert learned == [(1, 0.4, 0.5), (2, 0.5, -0.2), (3, 0.5, 0.6), (4, 0.6, 0.7), (5, 0.7, 0.8)]
    assert ctx.trace == {"iterations": 5, "epsilon_levels": 12, "alpha_levels": pytest.approx(2.55),
                         "decay_levels": 10, "shrinks": 3, "same_eps_kept": 1, "same_eps_lost": 1}
    assert ctx.tracker.best.success and ctx.tracker.best.distance == 12


def test_the_loop_traces_where_max_iterations_stopped_it():
    oracle = ScriptedOracle([True, True])
    ctx = _context(oracle)
    shrink_to_goal(ctx, PARAMS.model_copy(update={"max_iterations": 2}), Start(CLEAN + 40, 40, 0.4),
                   _climbing_estimate([]))
    assert ctx.trace["iterations"] == 2 and ctx.trace["epsilon_levels"] == 20
    assert not ctx.tracker.best.success


def test_the_start_is_the_first_reference_clip_in_the_target_class():
    oracle = ScriptedOracle([False, True])
    ctx = _context(oracle)
    start = start_in_target_class(ctx, PARAMS.model_copy(update={"targeted_start_epsilon": 0.4}), "nes_pgd")
    assert start is not None and start.epsilon == 102 and start.score == 0.9
    assert oracle.radii == [102, 102] and "stopped" not in ctx.trace  # both scan queries counted


def test_no_reference_clip_in_the_target_class_stops_the_attack_with_a_reason():
    oracle = ScriptedOracle([False] * 8)
    ctx = _context(oracle)
    assert start_in_target_class(ctx, PARAMS, "vbad") is None
    assert len(oracle.radii) == PARAMS.reference_scan
    assert ctx.trace["stopped"] == "no reference clip was classified as the target"
