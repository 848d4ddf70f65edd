"""The targeted shrinking ball (attacks/shrinking_ball.py): V-BAD's Algorithm 1 and Sec. 4.1 schedule,
shared by V-BAD, AstFocus and NES+PGD. Pure logic against scripted answers."""
from __future__ import annotations

import numpy as np

from model_server.protocol import Prediction
from worker.attacks.base import AttackContext, Best, Goal, Tracker
from worker.attacks.shrinking_ball import ShrinkSchedule, shrink_or_step

CLEAN = np.full((2, 4, 4, 3), 100, dtype=np.uint8)
TARGET = 1


class ScriptedOracle:
    """Answers the target or not by a script, one entry per clip; records the clips' L∞ radii."""

    def __init__(self, script: list[bool]) -> None:
        self.script, self.radii = list(script), []

    def query(self, clips: np.ndarray, partial: bool = False) -> list[Prediction]:
        answers = []
        for clip in clips:
            self.radii.append(int(np.abs(clip.astype(np.int16) - CLEAN).max()))
            label = TARGET if self.script.pop(0) else 0
            answers.append(Prediction(label=label, label_name=str(label), probability=0.9))
        return answers


def _context(oracle: ScriptedOracle) -> AttackContext:
    goal = Goal(source_label=0, target_label=TARGET)
    tracker = Tracker(best=Best(clip=CLEAN, score=-0.9, success=False))
    return AttackContext(clean=CLEAN, oracle=oracle, goal=goal, tracker=tracker, rng=np.random.default_rng(0))


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
