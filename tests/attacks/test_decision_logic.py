"""Hard-label pieces on toy oracles: g(θ) (attacks/boundary.py), OPT, Sign-OPT, the Heuristic attack's
key-frame search and the saliency masks. The real-stack runs are in tests/test_attacks_e2e.py."""
from __future__ import annotations

import numpy as np
import pytest

from model_server.protocol import Prediction
from tests.attacks.conftest import LinearOracle
from worker.attacks.base import AttackContext, Best, Goal, Tracker
from worker.attacks.boundary import Boundary, unit
from worker.attacks.heuristic import Heuristic, HeuristicParams
from worker.attacks.opt import Opt, OptParams
from worker.attacks.saliency import salient_mask, top_fraction
from worker.attacks.sign_opt import SignOpt, SignOptParams, sign_gradient
from worker.metrics import mean_absolute_perturbation, perturbation
from worker.oracle_client import BudgetExhausted


def reference_clips_for(clean: np.ndarray, w: np.ndarray | None):
    """Attacker-owned 'clips of class k': deterministic noisy clips, a different set per class, pushed
    across a LinearOracle's boundary (along −w) when w is given, so they start adversarial."""
    def clips(label: int, n: int) -> np.ndarray:
        rng = np.random.default_rng(1000 + label)
        push = 0.0 if w is None else -50.0 * np.sign(w)
        noisy = clean.astype(np.float32) + push + rng.uniform(-40, 40, size=(n, *clean.shape))
        return np.clip(noisy, 0, 255).astype(np.uint8)
    return clips


def context(oracle, clean: np.ndarray, seed: int = 0) -> AttackContext:
    first = oracle.query(clean[None])[0]
    goal = Goal(source_label=first["label"])
    tracker = Tracker(best=Best(clip=clean, score=goal.score(first), success=False))
    return AttackContext(clean=clean, oracle=oracle, goal=goal, tracker=tracker,
                         rng=np.random.default_rng([seed, 0]),
                         reference_clips=reference_clips_for(clean, getattr(oracle, "w", None)))


def run(attack, oracle, clean: np.ndarray) -> AttackContext:
    ctx = context(oracle, clean, attack.params.seed)
    try:
        attack.run(ctx)
    except BudgetExhausted:
        ctx.trace["stopped"] = "budget"
    return ctx


@pytest.fixture
def clean() -> np.ndarray:
    return np.random.default_rng(3).integers(60, 196, size=(4, 16, 16, 3), dtype=np.uint8)


def test_distance_finds_the_linear_boundary_and_keeps_the_adversarial_end(clean):
    oracle = LinearOracle(clean, budget=500, scale=1e-3, bias=2.0)
    ctx = context(oracle, clean)
    theta = unit(-oracle.w)[0]
    boundary = Boundary(ctx, tolerance=1e-4)
    g = boundary.distance(theta, start=5.0)
    # z = scale·⟨w, 255 λ θ⟩ + bias crosses 0 at λ* (before uint8 rounding)
    exact = 2.0 / (1e-3 * 255 * float(np.sum(oracle.w * -theta)))
    assert g == pytest.approx(exact, rel=0.02)
    assert boundary.adversarial(theta, g)  # the returned distance is achieved, not extrapolated
    best = ctx.tracker.best
    assert best.success and best.distance == pytest.approx(boundary.best_map)
    assert best.distance == pytest.approx(mean_absolute_perturbation(perturbation(best.clip, clean)))


def test_a_direction_worse_than_the_best_so_far_costs_one_query(clean):
    oracle = LinearOracle(clean, budget=500)
    ctx = context(oracle, clean)
    boundary = Boundary(ctx)
    weak = unit(-oracle.w
                + 3 * np.random.default_rng(0).standard_normal(oracle.w.shape).astype(np.float32))[0]
    best = boundary.distance(unit(-oracle.w)[0], start=5.0)
    before = oracle.used
    assert boundary.distance(weak, start=50.0, current_best=best) == float("inf")
    assert oracle.used == before + 1


@pytest.mark.parametrize("attack", [Opt(OptParams(seed=1, initial_directions=4)),
                                    SignOpt(SignOptParams(seed=1, initial_directions=4, samples=40))])
def test_decision_attacks_shrink_the_perturbation_and_respect_the_budget(clean, attack):
    oracle = LinearOracle(clean, budget=1500)
    ctx = run(attack, oracle, clean)
    curve = ctx.trace["map_curve"]
    assert oracle.used <= 1500 and ctx.tracker.best.success
    assert curve[-1][1] < 0.7 * curve[0][1]  # g(θ) descended from the first adversarial start
    assert ctx.tracker.best.distance == pytest.approx(curve[-1][1], abs=1e-3)


@pytest.mark.parametrize("make", [lambda: Opt(OptParams(seed=5, initial_directions=3, map_bound=0)),
                                  lambda: SignOpt(SignOptParams(seed=5, initial_directions=3, samples=30,
                                                                map_bound=0))])
def test_decision_attacks_repeat_every_query_for_the_same_seed(clean, make):
    logs = []
    for _ in range(2):
        oracle = LinearOracle(clean, budget=400)
        run(make(), oracle, clean)
        logs.append(oracle.log)
    assert logs[0] == logs[1] and len(logs[0]) == 400


def test_the_map_bound_stops_the_attack(clean):
    oracle = LinearOracle(clean, budget=5000)
    ctx = run(Opt(OptParams(initial_directions=3, map_bound=200.0)), oracle, clean)
    assert ctx.trace["stopped"] == "map_bound" and oracle.used < 100


def test_sign_estimate_points_against_the_boundary_normal(clean):
    """Eq. 11-12 with Sign-OPT's convention: −ĝ must move θ towards −w (where g falls)."""
    oracle = LinearOracle(clean, budget=2000)
    ctx = context(oracle, clean)
    boundary = Boundary(ctx)
    rng = np.random.default_rng(4)
    theta = unit(-oracle.w + 2 * rng.standard_normal(oracle.w.shape).astype(np.float32))[0]
    g = boundary.distance(theta, start=20.0)
    estimate = sign_gradient(boundary, theta, g, samples=400, beta=0.05, mask=None)
    tangent = estimate - np.sum(estimate * theta) * theta
    assert float(np.sum(-tangent * -oracle.w)) > 0


class KeyFrameOracle:
    """Adversarial iff frame `key` moved by more than `threshold` levels on average; p = 0.9 either way."""

    def __init__(self, clean: np.ndarray, key: int, budget: int, threshold: float = 2.0) -> None:
        self.clean, self.key, self.threshold = clean.astype(np.int16), key, threshold
        self.budget, self.used = budget, 0

    @property
    def remaining(self) -> int:
        return self.budget - self.used

    def query(self, clips: np.ndarray, partial: bool = False) -> list[Prediction]:
        if self.remaining == 0 or (len(clips) > self.remaining and not partial):
            raise BudgetExhausted("toy budget")
        clips = clips[: self.remaining]
        self.used += len(clips)
        moved = [np.abs(c[self.key].astype(np.int16) - self.clean[self.key]).mean() > self.threshold
                 for c in clips]
        return [Prediction(label=int(m), label_name=str(int(m)), probability=0.9) for m in moved]


def test_heuristic_keeps_only_the_frame_that_matters(clean):
    oracle = KeyFrameOracle(clean, key=2, budget=3000)
    params = HeuristicParams(initial_directions=2, spatial=False, max_iterations=2)
    ctx = run(Heuristic(params), oracle, clean)
    assert ctx.trace["key_frames"] == [2]
    best = ctx.tracker.best
    assert best.success and np.array_equal(best.clip[[0, 1, 3]], clean[[0, 1, 3]])
    assert oracle.used <= 3000


def test_heuristic_temporal_switch_off_keeps_every_frame(clean):
    oracle = KeyFrameOracle(clean, key=1, budget=600)
    ctx = run(Heuristic(HeuristicParams(initial_directions=1, spatial=False, temporal=False,
                                        max_iterations=1)), oracle, clean)
    assert ctx.trace["key_frames"] == [0, 1, 2, 3]


def test_top_fraction_keeps_exactly_the_ratio_of_largest_values():
    values = np.arange(100, dtype=np.float32).reshape(10, 10)
    mask = top_fraction(values, 0.25)
    assert mask.sum() == 25 and mask.ravel()[75:].all()


def test_salient_mask_finds_the_object_on_a_flat_frame():
    clip = np.full((2, 64, 64, 3), 90, dtype=np.uint8)
    clip[:, 20:36, 28:44] = 240
    mask = salient_mask(clip, 0.15, "spectral_residual")[..., 0]
    assert mask.shape == (2, 64, 64) and mask[0].mean() == pytest.approx(0.15, abs=0.01)
    box = np.zeros((64, 64), bool)
    box[16:40, 24:48] = True  # the square and a 4-pixel rim (saliency peaks on its edges)
    assert mask[0][box].mean() > 3 * mask[0][~box].mean()
    assert salient_mask(clip, 1.0, "fine_grained").min() == 1.0


def targeted_context(oracle, clean: np.ndarray) -> AttackContext:
    first = oracle.query(clean[None])[0]
    goal = Goal(source_label=first["label"], target_label=1)
    tracker = Tracker(best=Best(clip=clean, score=goal.score(first), success=False))
    return AttackContext(clean=clean, oracle=oracle, goal=goal, tracker=tracker,
                         rng=np.random.default_rng([0, 0]),
                         reference_clips=reference_clips_for(clean, None))


@pytest.mark.parametrize("threshold, dropped", [(17.0, 1), (5.0, 0)])
def test_targeted_heuristic_adds_the_salient_mask_after_the_key_frame_search(clean, threshold, dropped):
    # The reference clips move every pixel by ~20 levels: with φ = 0.8 of the pixels masked, frame 2
    # moves ~16 on average, which misses a threshold of 17 and meets one of 5.
    oracle = KeyFrameOracle(clean, key=2, budget=3000, threshold=threshold)
    params = HeuristicParams(initial_directions=1, max_iterations=1)
    ctx = targeted_context(oracle, clean)
    try:
        Heuristic(params).run(ctx)
    except BudgetExhausted:
        pass
    trace = ctx.trace
    assert trace["spatial_stage"] == "after_temporal" and trace["key_frames"] == [2]
    assert trace["spatial_dropped"] == dropped and ctx.tracker.best.success
    assert trace["mask_density"] == pytest.approx(0.25 if dropped else 0.25 * 0.8, abs=0.01)


def test_salient_mask_first_can_miss_a_target_the_whole_frames_reach(clean):
    oracle = KeyFrameOracle(clean, key=2, budget=3000, threshold=17.0)
    ctx = targeted_context(oracle, clean)
    Heuristic(HeuristicParams(initial_directions=1, max_iterations=1, spatial_stage="first")).run(ctx)
    assert ctx.trace["spatial_stage"] == "first" and ctx.trace["key_frames"] == []
    assert not ctx.tracker.best.success


class _StartThatMeetsTheBound(Opt):
    """A start whose own query lands within the bound but hands back no direction, as RLSB's targeted
    fine-tuning can (its episodes query the victim before the scan)."""

    def start(self, ctx, boundary):
        boundary.adversarial_clips(reference_clips_for(ctx.clean, ctx.oracle.w)(1, 1))
        return None, float("inf"), None


def test_a_start_that_already_met_the_bound_says_so(clean):
    oracle = LinearOracle(clean, budget=50)
    ctx = run(_StartThatMeetsTheBound(OptParams(map_bound=200.0)), oracle, clean)
    assert ctx.tracker.best.success and ctx.trace["stopped"] == "map_bound"
    ctx = run(_StartThatMeetsTheBound(OptParams(map_bound=0.5)), LinearOracle(clean, budget=50), clean)
    assert ctx.trace["stopped"] == "no adversarial starting direction"
