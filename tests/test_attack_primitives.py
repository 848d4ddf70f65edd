"""Pure logic shared by the attacks: uint8 projection, NES, goals and the best-so-far tracker."""
from __future__ import annotations

import numpy as np
import pytest

from model_server.protocol import Prediction
from worker.attacks.base import AttackContext, Best, Goal, Tracker
from worker.attacks.primitives import (
    antithetic_noise,
    nes_gradient,
    offer_candidate,
    probe_samples,
    project_linf,
    rank_transform,
    score_samples,
    to_levels,
)


def test_to_levels_rounds_down_so_epsilon_is_never_exceeded():
    assert to_levels(0.05) == 12
    assert to_levels(1 / 255) == 1
    assert to_levels(0.001) == 0


def test_projection_stays_on_the_grid_inside_the_ball_and_the_valid_range():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    wild = clean + rng.normal(0, 80, size=clean.shape)
    projected = project_linf(wild, clean, 12)
    assert projected.dtype == np.uint8
    assert np.abs(projected.astype(int) - clean).max() <= 12


def test_antithetic_noise_interleaves_pairs():
    noise = antithetic_noise(np.random.default_rng(0), (3, 2), pairs=4)
    assert noise.shape == (8, 3, 2)
    assert np.array_equal(noise[0::2], -noise[1::2])


def test_masked_noise_is_bit_for_bit_the_unmasked_noise_masked():
    # AstFocus and key-frame finishing mask inside antithetic_noise; the grid's rows need the same directions
    mask = np.zeros((4, 6, 6, 1), dtype=np.float32)
    mask[1:3, 2:5, 1:4] = 1.0
    masked_after = antithetic_noise(np.random.default_rng(7), (4, 6, 6, 3), pairs=5) * mask
    masked_inside = antithetic_noise(np.random.default_rng(7), (4, 6, 6, 3), pairs=5, mask=mask)
    assert np.array_equal(masked_after.view(np.uint32), masked_inside.view(np.uint32))  # signed zeros too


def test_nes_recovers_the_sign_of_a_linear_loss():
    rng = np.random.default_rng(1)
    direction = rng.standard_normal(50).astype(np.float32)
    noise = antithetic_noise(rng, (50,), pairs=2000)
    sigma = 0.01
    losses = np.array([direction @ (sigma * u) for u in noise])
    estimate = nes_gradient(losses, noise, sigma)
    cosine = estimate @ direction / (np.linalg.norm(estimate) * np.linalg.norm(direction))
    assert cosine > 0.9


def test_nes_drops_an_unpaired_tail():
    noise = antithetic_noise(np.random.default_rng(0), (5,), pairs=3)
    full = nes_gradient(np.arange(6, dtype=np.float32)[:5], noise[:6], 0.1)
    paired = nes_gradient(np.arange(4, dtype=np.float32), noise[:4], 0.1)
    assert np.allclose(full, paired)


def test_rank_transform_is_centred_and_ordered():
    ranks = rank_transform(np.array([3.0, -1.0, 10.0]))
    assert np.allclose(ranks, [0.0, -0.5, 0.5])


def test_goal_scores_are_positive_exactly_when_met():
    untargeted = Goal(source_label=3)
    assert untargeted.score({"label": 3, "label_name": "a", "probability": 0.9}) == -0.9
    assert untargeted.score({"label": 4, "label_name": "b", "probability": 0.6}) == 0.6
    targeted = Goal(source_label=3, target_label=7)
    assert not targeted.is_met(4) and targeted.is_met(7)
    assert targeted.score({"label": 4, "label_name": "b", "probability": 0.6}) == -0.6


def test_tracker_prefers_success_then_score():
    clip = np.zeros((1, 2, 2, 3), np.uint8)
    seen = []
    tracker = Tracker(best=Best(clip=clip, score=-0.9, success=False), on_improve=seen.append)
    assert tracker.offer(clip + 1, -0.5, False)
    assert not tracker.offer(clip + 2, -0.7, False)
    assert tracker.offer(clip + 3, 0.1, True)
    assert not tracker.offer(clip + 4, -0.01, False)
    assert tracker.best.success and tracker.best.clip[0, 0, 0, 0] == 3 and len(seen) == 2


def test_tracker_prefers_the_smaller_distance_between_equally_successful_offers():
    clip = np.zeros((1, 2, 2, 3), np.uint8)
    tracker = Tracker(best=Best(clip=clip, score=-0.9, success=False))
    assert tracker.offer(clip + 1, 0.97, False, distance=255)  # a targeted start at ε = 1
    assert tracker.offer(clip + 2, 0.60, False, distance=200)  # smaller ε, target kept less surely
    assert not tracker.offer(clip + 3, 0.99, False, distance=230)
    assert tracker.offer(clip + 4, 0.51, True, distance=12)
    assert not tracker.offer(clip + 5, 0.52, True, distance=12.5)
    assert tracker.best.clip[0, 0, 0, 0] == 4 and tracker.best.distance == 12


class LabelsOracle:
    """Answers scripted (label, probability) pairs; answers at most `left` clips of a batch (the budget)."""

    def __init__(self, answers: list[tuple[int, float]], left: int) -> None:
        self.answers, self.left, self.sent = answers, left, 0

    def query(self, clips: np.ndarray, partial: bool = False) -> list[Prediction]:
        count = min(len(clips), self.left)
        self.sent += count
        return [Prediction(label=k, label_name=str(k), probability=p) for k, p in self.answers[:count]]


def _context(oracle: LabelsOracle, clean: np.ndarray, goal: Goal) -> AttackContext:
    tracker = Tracker(best=Best(clip=clean, score=-1.0, success=False))
    return AttackContext(clean=clean, oracle=oracle, goal=goal, tracker=tracker, rng=np.random.default_rng(0))


def test_probe_samples_are_projected_steps_along_each_direction():
    clean = np.full((2, 4, 4, 3), 250, dtype=np.uint8)
    directions = antithetic_noise(np.random.default_rng(1), clean.shape, 2)
    samples = probe_samples(clean, clean, 3, 2.55, directions)
    assert samples.shape == (4, *clean.shape) and samples.dtype == np.uint8
    assert np.abs(samples.astype(int) - clean).max() <= 3 and samples.max() <= 255
    assert np.array_equal(samples[0], project_linf(clean + 2.55 * directions[0], clean, 3))


def test_probe_samples_take_directions_one_at_a_time_from_a_generator():
    # V-BAD streams its patch-weighted directions rather than holding all of them at once
    rng = np.random.default_rng(2)
    clean = rng.integers(0, 256, size=(2, 4, 4, 3), dtype=np.uint8)
    x = project_linf(clean + rng.normal(0, 4, clean.shape), clean, 6)
    directions = antithetic_noise(rng, clean.shape, 3)
    streamed = probe_samples(x, clean, 6, 5.1, (u for u in directions))
    assert np.array_equal(streamed, np.stack([project_linf(x + 5.1 * u, clean, 6) for u in directions]))


def test_scores_are_minus_the_goal_score_of_the_answered_samples():
    clean = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    oracle = LabelsOracle([(0, 0.9), (1, 0.6), (0, 0.7)], left=3)
    samples = np.stack([clean + i for i in range(4)])
    scored = score_samples(_context(oracle, clean, Goal(source_label=0, target_label=1)), samples,
                           stop_when_met=False)
    assert oracle.sent == 3  # the budget answered three of four
    assert (scored.losses.tolist() == pytest.approx([0.9, -0.6, 0.7])
            and scored.met.tolist() == [False, True, False])


def test_a_sample_that_meets_the_goal_ends_the_estimate_as_the_success():
    clean = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    oracle = LabelsOracle([(0, 0.9), (3, 0.6), (0, 0.7)], left=3)
    samples = np.stack([clean + i for i in range(3)])
    ctx = _context(oracle, clean, Goal(source_label=0))
    assert score_samples(ctx, samples, stop_when_met=True) is None
    assert ctx.tracker.best.success and np.array_equal(ctx.tracker.best.clip, samples[1])


def test_an_iterate_is_one_query_offered_to_the_tracker():
    clean = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    oracle = LabelsOracle([(0, 0.8), (2, 0.6)], left=2)
    ctx = _context(oracle, clean, Goal(source_label=0))
    met, score, _ = offer_candidate(ctx, clean + 1)
    assert (met, score, oracle.sent) == (False, -0.8, 1) and ctx.tracker.best.score == -0.8
    oracle.answers.pop(0)
    met, score, answer = offer_candidate(ctx, clean + 2)
    assert met and score == 0.6 and answer["label"] == 2
    assert ctx.tracker.best.success and np.array_equal(ctx.tracker.best.clip, clean + 2)
