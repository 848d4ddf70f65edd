"""A toy oracle for unit tests of attack LOGIC (budget arithmetic, determinism, schedules).

The attacks' end-to-end tests run against the real stack (tests/test_attacks_e2e.py); this fake only
lets the control flow be checked in milliseconds.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from model_server.protocol import Prediction
from worker.attacks.base import Attack, AttackContext, Best, Goal, Tracker
from worker.oracle_client import BudgetExhausted


class LinearOracle:
    """Two classes; p(source) = sigmoid(scale·⟨w, x − x0⟩ + bias).

    w is smooth (constant on 4×4 blocks, like the gradients of real image models are locally
    correlated), so patch-wise estimates can find it.
    """

    def __init__(self, clean: np.ndarray, budget: int, scale: float = 1e-3, bias: float = 2.0,
                 seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        t, h, w, c = clean.shape
        coarse = rng.standard_normal((t, h // 4, w // 4, 1)).astype(np.float32)
        self.w = np.kron(coarse, np.ones((1, 4, 4, c), dtype=np.float32))
        self.clean = clean.astype(np.float32)
        self.scale, self.bias = scale, bias
        self.budget, self.used, self.log = budget, 0, []

    @property
    def remaining(self) -> int:
        return self.budget - self.used

    def query(self, clips: np.ndarray, partial: bool = False) -> list[Prediction]:
        if clips.ndim == 4:
            clips = clips[None]
        if self.remaining == 0 or (len(clips) > self.remaining and not partial):
            raise BudgetExhausted("toy budget")
        clips = clips[: self.remaining]
        self.used += len(clips)
        answers = []
        for clip in clips:
            assert clip.dtype == np.uint8, "attacks must send uint8 clips"
            self.log.append(hashlib.blake2b(clip.tobytes(), digest_size=8).hexdigest())  # stable across runs
            z = self.scale * float(np.sum(self.w * (clip - self.clean))) + self.bias
            p_source = 1 / (1 + np.exp(-z))
            label = 0 if p_source >= 0.5 else 1
            answers.append(Prediction(label=label, label_name=str(label),
                                      probability=p_source if label == 0 else 1 - p_source))
        return answers


@pytest.fixture
def toy_clip() -> np.ndarray:
    return np.random.default_rng(3).integers(40, 216, size=(4, 16, 16, 3), dtype=np.uint8)


def run_on_toy(attack: Attack, clean: np.ndarray, budget: int, target: int | None = None,
               **oracle_kw: float) -> tuple[LinearOracle, Tracker]:
    """Run an attack the way the runner does (clean query first) against a LinearOracle.

    Targeted (target = 1): the attacker's reference clip of class 1 is the clean clip pushed 120
    levels against the oracle's weights, which the oracle puts in class 1.
    """
    oracle = LinearOracle(clean, budget, **oracle_kw)
    first = oracle.query(clean[None])[0]
    goal = Goal(source_label=first["label"], target_label=target)
    tracker = Tracker(best=Best(clip=clean, score=goal.score(first), success=False))
    opposite = np.clip(clean - 120.0 * np.sign(oracle.w), 0, 255).astype(np.uint8)
    ctx = AttackContext(clean=clean, oracle=oracle, goal=goal, tracker=tracker,
                        rng=np.random.default_rng([attack.params.seed, 0]),
                        reference_clips=lambda label, n: np.stack([opposite] * n))
    try:
        attack.run(ctx)
    except BudgetExhausted:
        pass
    return oracle, tracker
