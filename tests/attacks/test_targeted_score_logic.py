"""Targeted score-based attacks (V-BAD's Algorithm 1, NES+PGD, AstFocus) on a toy oracle: the result is
the smallest-ε clip that kept the target, and only ε down to the goal ε makes the run a success.

They start from a target-class clip at ε = 1 and shrink ε; the target's probability falls as ε does, so
a tracker that ranked clips by score alone returned the ε = 1 start (the grid's first targeted rows
reported L∞ 247-255 that way).
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.attacks.conftest import run_on_toy
from worker.attacks.astfocus import AstFocus, AstFocusParams
from worker.attacks.base import job_succeeded
from worker.attacks.nes_pgd import NesPgd, NesPgdParams
from worker.attacks.primitives import to_levels
from worker.attacks.vbad import Srbad, SrbadParams

FAST = {"epsilon_decay": 0.1}  # 25 levels per shrink: the toy runs need few iterations
# Keeping class 1 needs ~20 levels along the oracle's weights with this bias: above the goal's 12.
OUT_OF_REACH = {"bias": 50.0}

ATTACKS = {
    "srbad": lambda: Srbad(SrbadParams(**FAST)),
    "nes_pgd": lambda: NesPgd(NesPgdParams(**FAST)),
    "astfocus": lambda: AstFocus(AstFocusParams(**FAST, patch_size=8, candidates_per_side=3,
                                                max_key_frames=2)),
}


def _linf(clip: np.ndarray, clean: np.ndarray) -> int:
    return int(np.abs(clip.astype(np.int16) - clean).max())


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_result_is_the_smallest_epsilon_that_kept_the_target(attack, toy_clip):
    _, tracker = run_on_toy(ATTACKS[attack](), toy_clip, budget=1500, target=1, **OUT_OF_REACH)
    best = tracker.best
    assert best.answer["label"] == 1
    assert best.distance is not None and _linf(best.clip, toy_clip) <= best.distance < 255
    assert best.distance > to_levels(0.05) and not best.success
    assert not job_succeeded(label_met=True, best=best)  # the label alone is not V-BAD's success


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_run_that_shrinks_epsilon_to_the_goal_succeeds(attack, toy_clip):
    oracle, tracker = run_on_toy(ATTACKS[attack](), toy_clip, budget=3000, target=1)
    best = tracker.best
    assert best.success and best.answer["label"] == 1 and oracle.used <= 3000
    assert _linf(best.clip, toy_clip) <= to_levels(0.05)
    assert job_succeeded(label_met=True, best=best)
