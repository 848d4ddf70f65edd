"""AstFocus's pure pieces: candidate patches (Fig. 2), rewards (Eq. 7-16), the key-frame cap, the
agents' PPO learning (Eq. 17-18), and the attack loop with every ablation on a toy oracle."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.attacks.conftest import run_on_toy
from worker.attacks.astfocus import (
    AstFocus,
    AstFocusParams,
    FocusAgents,
    candidate_boxes,
    common_reward,
    edgebox_objectness,
    representative_reward,
    sparse_reward,
)
from worker.attacks.ppo import clipped_surrogate, generalized_advantages


def test_candidates_are_65px_patches_overlapping_across_a_112px_frame():
    boxes = candidate_boxes(112, 112, 65, 4)
    assert len(boxes) == 16
    assert (boxes[:, 2:] == 65).all()
    assert boxes[:, 0].min() == 0 and (boxes[:, 0] + boxes[:, 2]).max() == 112
    assert np.diff(np.unique(boxes[:, 0])).max() < 65  # neighbours overlap


def test_common_reward_is_the_relative_change_of_exp_score():
    assert common_reward(-0.9, -0.9) == 0
    assert common_reward(-0.9, -0.5) == pytest.approx(np.exp(0.4) - 1)
    assert common_reward(-0.5, -0.9) < 0


def test_sparse_reward_peaks_at_L_key_frames():
    def chosen(n: int) -> np.ndarray:
        return np.arange(16) < n

    assert sparse_reward(chosen(10), 10) == 1.0
    assert sparse_reward(chosen(4), 10) < sparse_reward(chosen(8), 10) < 1.0
    assert sparse_reward(chosen(16), 10) == pytest.approx(np.exp(-6 / 16))


def test_representative_reward_grows_as_the_key_frames_cover_the_video():
    features = np.random.default_rng(0).standard_normal((16, 8))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    one, half, every = (np.arange(16) < n for n in (1, 8, 16))
    assert representative_reward(features, one) < representative_reward(features, half)
    assert representative_reward(features, every) == 1.0
    assert representative_reward(features, np.zeros(16, bool)) == 0.0


def test_edgeboxes_find_more_objectness_on_an_object_than_on_flat_background():
    frames = np.full((1, 112, 112, 3), 120, dtype=np.uint8)
    frames[0, 10:50, 10:50] = 240  # a bright square in the top-left corner
    scores = edgebox_objectness(frames, candidate_boxes(112, 112, 48, 3))
    assert scores.shape == (1, 9)
    assert scores[0, 0] == scores[0].max() > scores[0, -1]


def test_clipped_surrogate_and_gae_match_their_definitions():
    new, old = torch.log(torch.tensor([1.5, 0.5])), torch.zeros(2)
    loss = clipped_surrogate(new, old, torch.tensor([1.0, -1.0]), clip=0.2)
    assert float(loss) == pytest.approx(-(1.2 * 1.0 + 0.8 * -1.0) / 2)  # both ratios clipped
    advantages, returns = generalized_advantages([1.0, 1.0], [0.0, 0.0], gamma=0.5, lam=1.0)
    assert advantages == pytest.approx([1.5, 1.0]) and returns == advantages


def _agents(**params) -> FocusAgents:
    clip = np.random.default_rng(1).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    base = {"patch_size": 16, "candidates_per_side": 3, "max_key_frames": 3, "edgebox_reward": False}
    return FocusAgents(AstFocusParams(**{**base, **params}), clip, np.random.default_rng(2))


def test_key_frames_are_capped_at_L_and_never_empty():
    agents = _agents()
    focus = agents.act()
    assert 1 <= focus.selected.sum() <= 3
    assert agents._cap(np.ones(6, bool), np.linspace(0, 1, 6)).tolist() == [False] * 3 + [True] * 3
    assert agents._cap(np.zeros(6, bool), np.linspace(0, 1, 6)).sum() == 1


def test_ablations_focus_where_table_3_says():
    assert _agents(agents="none").mask(_agents(agents="none").act(), (6, 32, 32, 3)).all()
    spatial = _agents(agents="spatial")
    focus = spatial.act()
    assert (focus.selected.all()
            and spatial.mask(focus, (6, 32, 32, 3)).mean() == pytest.approx(16 * 16 / 32**2))
    temporal = _agents(agents="temporal")
    focus = temporal.act()
    assert all(p < 0 for p in focus.patches) and focus.selected.sum() <= 3
    random_focus = _agents(random_agents=True).act()
    assert random_focus.selected.sum() == 3


def test_ppo_moves_the_spatial_agent_towards_the_rewarded_patch():
    agents = _agents(agents="spatial", ppo_memory=4, policy_learning_rate=3e-3)

    def share_of_patch_4() -> float:
        return float(np.mean([np.mean(np.array(agents.act().patches) == 4) for _ in range(30)]))

    before = share_of_patch_4()
    for _ in range(60):
        focus = agents.act()
        agents.learn(focus, float(np.mean(np.array(focus.patches) == 4)), 0.0)  # reward: frames on patch 4
    assert share_of_patch_4() > max(0.3, 2 * before)


def test_ppo_moves_the_temporal_agent_towards_the_sparse_reward_optimum():
    agents = _agents(agents="temporal", ppo_memory=4, policy_learning_rate=3e-3)

    def mean_key_frames() -> float:
        return float(np.mean([agents.act().selected.sum() for _ in range(30)]))

    for _ in range(60):
        focus = agents.act()
        agents.learn(focus, 0.0, -abs(int(focus.selected.sum()) - 1))  # best: a single key frame
    assert mean_key_frames() < 1.5


SMALL = {"patch_size": 8, "candidates_per_side": 3, "max_key_frames": 2}


@pytest.mark.parametrize("ablation", [{}, {"agents": "spatial"}, {"agents": "temporal"}, {"agents": "none"},
                                      {"random_agents": True}])
def test_every_ablation_fools_a_linear_model_inside_the_ball(ablation, toy_clip):
    oracle, tracker = run_on_toy(AstFocus(AstFocusParams(**SMALL, **ablation)), toy_clip, budget=3000)
    assert tracker.best.success and oracle.used <= 3000
    assert np.abs(tracker.best.clip.astype(int) - toy_clip).max() <= 12


def test_budget_is_never_exceeded_and_the_same_seed_repeats_every_query(toy_clip):
    hard = {"scale": 2e-5, "bias": 9.0}
    first, _ = run_on_toy(AstFocus(AstFocusParams(**SMALL, seed=4)), toy_clip, 200, **hard)
    second, _ = run_on_toy(AstFocus(AstFocusParams(**SMALL, seed=4)), toy_clip, 200, **hard)
    assert first.used == 200 and first.log == second.log
