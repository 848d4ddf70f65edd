"""Gradient key-frame selection's pure pieces: per-frame weights (Eq. 3-4), the adaptive key-frame set
(Sec. 3.2), the L2,1 loss with switching (α, β) (Eq. 1-2, Sec. 3.1), the Sec. 4.2 baselines, and the
attack loop on a toy oracle with a toy white-box surrogate (transfer checks, budget, determinism)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.attacks.conftest import LinearOracle
from worker.attacks.base import AttackContext, Best, Goal, Tracker
from worker.attacks.keyframe import (
    KeyframeGrad,
    KeyframeParams,
    conv_containment,
    fixed_key_frames,
    frame_weights,
    goal_margin,
    ifd_key_frames,
    importance,
    l21_norm,
    measure_containment,
    objective,
    select_key_frames,
    surrogate_frame_weights,
    switch_weights,
)
from worker.oracle_client import BudgetExhausted


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- Eq. 3-4: per-frame weights ----------------------------------------------------------------------


def test_eq3_one_feature_step_per_frame_keeps_each_frames_gradient_sum():
    per_step = np.array([0.5, -2.0, 1.0, 0.0])
    assert np.allclose(frame_weights(per_step, np.eye(4, dtype=bool)), per_step)


def test_eq4_weight_is_the_mean_over_the_feature_maps_that_contain_the_frame():
    contains = conv_containment(5, window=3, stride=1, padding=1)  # z = 3, 'same' padding
    assert contains.astype(int).tolist() == [
        [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]]
    per_step = np.array([3.0, 6.0, 9.0, 0.0, 3.0])
    weights = frame_weights(per_step, contains)
    assert weights[2] == pytest.approx((6 + 9 + 0) / 3)  # (1/z) Σ_z over the 3 maps holding frame 2
    assert weights[0] == pytest.approx((3 + 6) / 2)  # an edge frame lies in two maps only
    strided = conv_containment(6, window=2, stride=2)  # frames cut by no map would get weight 0
    assert frame_weights(np.array([1.0, 2.0, 4.0]), strided).tolist() == [1, 1, 2, 2, 4, 4]


def test_containment_measured_by_autograd_matches_the_convolution_geometry():
    for stride in (1, 2):
        conv = nn.Conv3d(3, 2, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False)
        nn.init.constant_(conv.weight, 1.0)
        model = nn.Sequential(conv, nn.Flatten(), nn.LazyLinear(2))
        clip = np.random.default_rng(0).integers(1, 255, size=(8, 4, 4, 3), dtype=np.uint8)
        model(torch.zeros(1, 3, 8, 4, 4))  # materialise the lazy layer
        assert np.array_equal(measure_containment(model, "0", clip), conv_containment(8, 3, stride, 1))


class FrameScaled(nn.Module):
    """logit_0 = Σ_k c_k · Σ_pixels x_k: frame k's gradient sum is c_k · H·W·3."""

    def __init__(self, coefficients: list[float]) -> None:
        super().__init__()
        self.register_buffer("c", torch.tensor(coefficients).view(1, 1, -1, 1, 1))
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (self.features(x) * self.c).flatten(1).sum(1)
        return torch.stack([z, -z], dim=1)


def test_frames_with_larger_gradients_get_larger_weights_and_are_chosen_first():
    model = FrameScaled([0.1, 2.0, -0.5, 1.0])
    clip = np.full((4, 2, 2, 3), 100, dtype=np.uint8)
    for layer in ("input", "features"):
        weights = surrogate_frame_weights(model, clip, label=0, layer=layer, kind="signed")
        assert np.allclose(weights, np.array([0.1, 2.0, -0.5, 1.0]) * 12)
    share = importance(weights)
    assert share.sum() == pytest.approx(1) and (share >= 0).all()
    assert np.argsort(-share).tolist() == [1, 3, 2, 0]  # |−0.5| outranks 0.1: magnitude of Eq. 3's sum
    assert select_key_frames(weights, 0.5).tolist() == [False, True, False, False]  # 2/3.6 ≥ 0.5
    assert select_key_frames(weights, 0.6).tolist() == [False, True, False, True]


def test_absolute_weights_do_not_cancel_opposite_gradients_within_a_frame():
    class HalfAndHalf(nn.Module):  # frame 0: +1 on the left half, −1 on the right half; frame 1: +0.1
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = x[:, :, 0, :, :1].sum() - x[:, :, 0, :, 1:].sum() + 0.1 * x[:, :, 1].sum()
            return torch.stack([z, -z])[None]

    clip = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    signed = surrogate_frame_weights(HalfAndHalf(), clip, 0, "input", "signed")
    absolute = surrogate_frame_weights(HalfAndHalf(), clip, 0, "input", "absolute")
    assert signed[0] == 0 and signed[1] > 0
    assert absolute[0] > absolute[1] > 0


# --- Sec. 3.2: the adaptive key-frame set --------------------------------------------------------


def test_selection_stops_as_soon_as_the_weights_reach_the_boundary():
    weights = np.array([0.1, 0.5, 0.2, 0.2])
    assert select_key_frames(weights, 0.3).tolist() == [False, True, False, False]
    assert select_key_frames(weights, 0.5).tolist() == [False, True, False, False]  # exactly b
    assert select_key_frames(weights, 0.6).tolist() == [False, True, True, False]  # tie: earlier frame
    assert select_key_frames(weights, 0.9).tolist() == [False, True, True, True]
    assert select_key_frames(weights, 1.0).all()


def test_at_least_one_frame_and_uniform_weights_without_any_gradient():
    assert select_key_frames(np.array([0.0, 9.0, 0.0]), 1e-6).sum() == 1
    flat = select_key_frames(np.zeros(16), 0.3)
    assert flat.sum() == 5  # uniform 1/16 each: 5 frames first reach 0.3
    assert importance(np.zeros(4)).tolist() == [0.25] * 4


def test_section_4_2_baselines_fixed_and_interframe_differencing():
    assert np.flatnonzero(fixed_key_frames(16, 4)).tolist() == [0, 5, 10, 15]
    clip = np.zeros((6, 4, 4, 3), dtype=np.uint8)
    clip[3:] = 200  # a cut before frame 3
    clip[5] = 150  # a smaller change before frame 5
    assert np.flatnonzero(ifd_key_frames(clip, 2)).tolist() == [3, 5]
    params = KeyframeParams()
    assert params.resolved_fixed_frames(False, 16) == 4 and params.resolved_fixed_frames(True, 16) == 5


def test_paper_defaults_resolve_by_goal():
    params = KeyframeParams()
    assert params.resolved_boundary(False) == 0.3 and params.resolved_boundary(True) == 0.4
    assert params.resolved_iterations(False) == 500 and params.resolved_iterations(True) == 1000
    assert KeyframeParams(boundary=0.7).resolved_boundary(True) == 0.7
    assert params.alpha_beta_unfooled == (0.0, 1.0) and params.alpha_beta_fooled == (1.0, 0.0)
    with pytest.raises(ValueError):
        KeyframeParams(boundary=0.0)
    with pytest.raises(ValueError):
        KeyframeParams(finish_with="opt")


# --- Eq. 1-2: the L2,1 loss and the switching --------------------------------------------------


def test_l21_norm_sums_the_frames_l2_norms():
    delta = torch.zeros(1, 3, 3, 2, 2)
    delta[0, 0, 0, 0, 0], delta[0, 1, 0, 1, 1] = 3.0, 4.0  # frame 0: L2 = 5
    delta[0, 2, 2, 0, 1] = -2.0  # frame 2: L2 = 2
    assert float(l21_norm(delta)) == pytest.approx(7.0)  # the plain L2 norm would be √29


def test_switching_picks_the_cross_entropy_until_fooled_then_the_l21_norm():
    assert switch_weights(False, (0.0, 1.0), (1.0, 0.0)) == (0.0, 1.0)
    assert switch_weights(True, (0.0, 1.0), (1.0, 0.0)) == (1.0, 0.0)
    logits = torch.tensor([[2.0, 1.0, -1.0]])
    delta = torch.full((1, 3, 2, 2, 2), 0.5)
    untargeted, targeted = Goal(source_label=0), Goal(source_label=0, target_label=2)
    ce_source = float(torch.nn.functional.cross_entropy(logits, torch.tensor([0])))
    ce_target = float(torch.nn.functional.cross_entropy(logits, torch.tensor([2])))
    assert float(objective(delta, logits, untargeted, 0.0, 1.0)) == pytest.approx(-ce_source)  # Eq. 1
    assert float(objective(delta, logits, targeted, 0.0, 1.0)) == pytest.approx(ce_target)  # Eq. 2
    assert float(objective(delta, logits, untargeted, 1.0, 0.0)) == pytest.approx(float(l21_norm(delta)))
    assert float(goal_margin(logits, untargeted)[0]) == pytest.approx(-1.0)  # 1 − 2: not fooled
    assert float(goal_margin(logits, targeted)[0]) == pytest.approx(-3.0)  # −1 − 2


def test_the_l21_phase_shrinks_only_the_key_frames():
    keep = torch.tensor([1.0, 0.0, 1.0]).view(1, 1, 3, 1, 1)
    delta = torch.randn(1, 3, 3, 2, 2, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    logits = torch.zeros(1, 2)
    (grad,) = torch.autograd.grad(objective(keep * delta, logits, Goal(0), 1.0, 0.0), delta)
    assert (grad[:, :, 1] == 0).all() and (grad[:, :, [0, 2]] != 0).all()
    assert (torch.sign(grad[:, :, 0]) == torch.sign(delta[:, :, 0])).all()  # descent moves δ towards 0


# --- the attack on a toy oracle with a toy white-box surrogate ------------------------------------------


class ToySurrogate(nn.Module):
    """The LinearOracle's model as two logits [z, 0], z = scale·⟨w, x − x0⟩ + bias (w of `seed`).

    Same seed as the oracle: a perfect surrogate; another seed: one whose gradients do not transfer.
    """

    def __init__(self, clean: np.ndarray, seed: int, scale: float = 1e-3, bias: float = 2.0) -> None:
        super().__init__()
        w = LinearOracle(clean, 1, scale=scale, bias=bias, seed=seed).w
        self.register_buffer("w", torch.from_numpy(w).permute(3, 0, 1, 2)[None])
        self.register_buffer("x0", torch.from_numpy(clean.astype(np.float32)).permute(3, 0, 1, 2)[None])
        self.scale, self.bias = scale, bias
        self.features = nn.Identity()  # per-frame feature map: Eq. 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.scale * ((self.features(x) - self.x0) * self.w).flatten(1).sum(1) + self.bias
        return torch.stack([z, torch.zeros_like(z)], dim=1)


class CountingOracle(LinearOracle):
    """Also records the size of every query batch."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    def query(self, clips: np.ndarray, partial: bool = False):
        answers = super().query(clips, partial)
        self.batches.append(len(answers))
        return answers


def run_toy(clean: np.ndarray, budget: int, surrogate_seed: int = 0, target: int | None = None,
            **params) -> tuple[CountingOracle, Tracker, dict]:
    """The runner's rules on the toy: clean query first, BudgetExhausted ends the attack."""
    oracle = CountingOracle(clean, budget)
    first = oracle.query(clean[None])[0]
    goal = Goal(source_label=first["label"], target_label=target)
    tracker = Tracker(best=Best(clip=clean, score=goal.score(first), success=False))
    params.setdefault("feature_layer", "features")  # the toy's per-frame feature map
    attack = KeyframeGrad(KeyframeParams(**params),
                          surrogate_loader=lambda: ToySurrogate(clean, surrogate_seed),
                          surrogate_info={"model": "toy"})
    ctx = AttackContext(clean=clean, oracle=oracle, goal=goal, tracker=tracker,
                        rng=np.random.default_rng([attack.params.seed, 0]))
    try:
        attack.run(ctx)
    except BudgetExhausted:
        pass
    return oracle, tracker, ctx.trace


def test_a_perfect_surrogate_transfers_at_the_first_check(toy_clip):
    oracle, tracker, trace = run_toy(toy_clip, budget=100)
    assert tracker.best.success
    assert oracle.used == 2 and len(trace["transfer_checks"]) == 1  # the clean query + one check
    changed = np.flatnonzero(np.any(tracker.best.clip != toy_clip, axis=(1, 2, 3)))
    assert set(changed) <= set(trace["key_frames"]) and 1 <= len(trace["key_frames"]) < len(toy_clip)
    assert trace["alpha_beta_runs"][0][:2] == [0.0, 1.0]  # the cross-entropy phase first (Sec. 3.1)


def test_targeted_goal_uses_eq_2_and_the_targeted_boundary(toy_clip):
    oracle, tracker, trace = run_toy(toy_clip, budget=100, target=1)
    assert tracker.best.success and tracker.best.answer["label"] == 1
    assert trace["boundary"] == 0.4 and oracle.used == 2


def test_every_transfer_check_is_one_counted_single_clip_query(toy_clip):
    oracle, tracker, trace = run_toy(toy_clip, budget=500, surrogate_seed=9, max_iterations=40)
    checks = trace["transfer_checks"]
    assert len(checks) >= 3 and not tracker.best.success  # the toy surrogate does not transfer
    assert oracle.used == 1 + len(checks) and oracle.batches == [1] * oracle.used
    margins = [c["required_margin"] for c in checks]
    assert margins == sorted(set(margins))  # every failed check raised κ
    assert all(c["surrogate_margin"] > c["required_margin"] for c in checks)  # sent only when fooled


def test_no_query_while_the_surrogate_is_not_fooled(toy_clip):
    oracle, _, trace = run_toy(toy_clip, budget=100, max_iterations=1)
    assert oracle.used == 1 and trace["transfer_checks"] == [] and trace["iterations"] == 1


def test_budget_is_never_exceeded_and_counted_checks_match_the_oracle(toy_clip):
    oracle, tracker, trace = run_toy(toy_clip, budget=12, surrogate_seed=9)
    assert oracle.used == 12 and len(trace["transfer_checks"]) == 11 and not tracker.best.success


def test_nes_finish_stays_on_the_key_frames_and_succeeds(toy_clip):
    oracle, tracker, trace = run_toy(toy_clip, budget=3000, surrogate_seed=9, max_iterations=20,
                                     finish_with="nes_pgd", epsilon=12 / 255, finish_population=20)
    assert tracker.best.success and oracle.used <= 3000 and trace["finish"]["iterations"] >= 1
    delta = tracker.best.clip.astype(int) - toy_clip
    assert np.abs(delta).max() <= 12
    assert set(np.flatnonzero(np.abs(delta).reshape(len(delta), -1).max(axis=1))) <= set(trace["key_frames"])


def test_the_same_seed_repeats_every_query(toy_clip):
    kwargs = {"surrogate_seed": 9, "max_iterations": 20, "finish_with": "nes_pgd", "finish_population": 10}
    first, _, _ = run_toy(toy_clip, 150, seed=3, **kwargs)
    second, _, _ = run_toy(toy_clip, 150, seed=3, **kwargs)
    other, _, _ = run_toy(toy_clip, 150, seed=4, **kwargs)
    assert first.used == second.used and first.log == second.log
    assert first.log != other.log  # the NES finish draws from the job's seed


def test_baseline_selections_run_the_same_loop(toy_clip):
    for selection in ("fixed", "ifd"):
        _, tracker, trace = run_toy(toy_clip, budget=100, selection=selection, fixed_frames=2)
        assert tracker.best.success and len(trace["key_frames"]) == 2 and trace["frame_weights"] is None


# --- the attacker's real surrogate --------------------------------------------------------------


def test_real_surrogate_weights_follow_its_temporal_convolution_and_the_trace_names_its_owner():
    from worker.attacks.keyframe import load_default_surrogate, surrogate_report

    model = load_default_surrogate()
    clip = np.random.default_rng(0).integers(0, 256, size=(16, 112, 112, 3), dtype=np.uint8)
    # The surrogate sees RGB and the frame difference x_t − x_{t−1}: its per-frame stage holds frames
    # t−1 and t, and after the 3×1×1 temporal convolution (z = 3) step t holds frames t−2 … t+1.
    assert np.array_equal(measure_containment(model, "stem.2", clip), conv_containment(16, 2, 1, 1)[:16])
    assert np.array_equal(measure_containment(model, "stem", clip), conv_containment(16, 4, 1, 2)[:16])
    weights = surrogate_frame_weights(model, clip, label=3, layer="stem", kind="signed")
    assert weights.shape == (16,) and np.isfinite(weights).all() and np.abs(weights).sum() > 0
    assert 1 <= select_key_frames(weights, 0.3).sum() < 16
    report = surrogate_report("mini_c3d")
    assert "attacker" in report["owner"] and report["shares_with_victim"] == "the 3D-conv family, no weights"
    assert surrogate_report("lrcn")["shares_with_victim"] is None
