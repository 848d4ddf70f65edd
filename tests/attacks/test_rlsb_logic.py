"""RLSB's pure pieces: the networks (Sec. 3.2), the frame-deletion MDP (Eq. 2-5), PPO pre-training
(Algorithm 1) with its budget stop and policy storage, and the attack (Algorithm 2) on a toy oracle.

The toy: 3 classes, 8×16×16 clips; a clip of class c has colour channel c dominant in every frame, and
the toy model looks at frame KEY only (label = its dominant channel). So frame KEY is THE key frame:
deleting any other frame keeps x + s adversarial, deleting KEY loses the goal.
"""
from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch

from model_server.protocol import Prediction
from worker.attacks.base import AttackContext, Best, Goal, Tracker
from worker.attacks.rlsb import (
    Episode,
    PretrainParams,
    Rlsb,
    RlsbParams,
    delete_frame,
    greedy_episode,
    load_policy,
    new_policy,
    parameter_count,
    pretrain,
    reference_pool,
    reward,
    save_policy,
    step_all,
)
from worker.attacks.saliency import salient_mask
from worker.oracle_client import BudgetExhausted

T, H, W, KEY = 8, 16, 16, 5


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_clip(label: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([label, seed])
    clip = rng.integers(20, 60, (T, H, W, 3))
    clip[..., label % 3] = rng.integers(180, 230, (T, H, W))
    return clip.astype(np.uint8)


def reference_clips(label: int, n: int) -> np.ndarray:
    """Attacker-owned clips; labels ≥ 3 (the dataset has 10 classes) look like class label % 3."""
    return np.stack([toy_clip(label, 100 + i) for i in range(n)])


class KeyFrameOracle:
    """Label = the dominant channel of frame KEY; probability = a softmax of the channel means."""

    def __init__(self, budget: int) -> None:
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
            assert clip.dtype == np.uint8
            self.log.append(hashlib.blake2b(clip.tobytes(), digest_size=8).hexdigest())  # stable across runs
            means = clip[KEY].reshape(-1, 3).mean(axis=0)
            label = int(means.argmax())
            weights = np.exp((means - means.max()) / 20)
            probability = float(weights[label] / weights.sum())
            answers.append(Prediction(label=label, label_name=str(label), probability=probability))
        return answers


def _episode(source: int = 0, reference: int = 1) -> Episode:
    clean, other = toy_clip(source, 0), toy_clip(reference, 1)
    return Episode.open(clean, other, salient_mask(clean, 0.6, "fine_grained"), Goal(source_label=source))


# --- networks -----------------------------------------------------------------------------------------


def test_networks_give_a_distribution_over_frames_and_one_value():
    policy = new_policy(T, "untargeted", np.random.default_rng(0))
    states = torch.from_numpy(np.stack([_episode().state(), _episode(0, 2).state()]))
    logits, values = policy.actor(states), policy.critic(states)
    assert logits.shape == (2, T) and values.shape == (2, 1)
    assert torch.softmax(logits, dim=1).sum(dim=1).tolist() == pytest.approx([1.0, 1.0])
    assert policy.probabilities(_episode().state()).sum() == pytest.approx(1.0)
    # any H×W: the per-frame features are pooled
    assert policy.actor(torch.zeros(1, T, 40, 24, 3)).shape == (1, T)


def test_parameter_count_matches_the_docstring():
    policy = new_policy(16, "untargeted", np.random.default_rng(0))
    assert sum(p.numel() for p in policy.actor.parameters()) == parameter_count(16, 16) == 92_560
    assert sum(p.numel() for p in policy.critic.parameters()) == parameter_count(16, 1) == 91_585
    assert len([m for m in policy.actor.modules() if isinstance(m, torch.nn.Conv2d)]) == 5
    assert len([m for m in policy.actor.modules() if isinstance(m, torch.nn.Linear)]) == 3


def test_a_stored_policy_loads_back_identical():
    policy = new_policy(T, "targeted", np.random.default_rng(1))
    loaded = load_policy(save_policy(policy))
    assert loaded.header == policy.header and loaded.frames == T and loaded.goal == "targeted"
    state = _episode().state()
    assert loaded.probabilities(state) == pytest.approx(policy.probabilities(state))
    with pytest.raises(pickle.UnpicklingError):
        load_policy(b"not a policy")


# --- the MDP ------------------------------------------------------------------------------------------


def test_the_transition_zeroes_exactly_one_frame():
    mask = np.ones((T, H, W, 1), dtype=np.float32)
    deleted = delete_frame(mask, 3)
    assert deleted[3].sum() == 0 and np.delete(deleted, 3, axis=0).all() and mask.all()
    episode = _episode()
    before = episode.state()
    episode.advance(3, Prediction(label=1, label_name="1", probability=0.9), finetune=False)
    after = episode.state()
    assert not after[3].any() and np.array_equal(np.delete(after, 3, 0), np.delete(before, 3, 0))
    assert np.abs(before).max() <= 1.0  # s_t / 255 in [-1, 1]


def test_rewards_of_eq_4_and_eq_5():
    assert reward(repeat=True, met=True, probability=0.9, finetune=False) == -1.0
    assert reward(repeat=False, met=False, probability=0.9, finetune=False) == 0.0
    assert reward(repeat=False, met=True, probability=0.9, finetune=False) == 1.0
    assert reward(repeat=True, met=True, probability=0.9, finetune=True) == -1.0
    assert reward(repeat=False, met=False, probability=0.9, finetune=True) == 0.0
    assert reward(repeat=False, met=True, probability=0.9, finetune=True) == 0.9


def test_episode_ends_on_a_lost_goal_or_a_repeat_and_keeps_the_last_adversarial_mask():
    oracle = KeyFrameOracle(100)
    episode = _episode()
    step_all([episode], [0], oracle.query, finetune=False)
    assert not episode.done and episode.rewards == [1.0] and oracle.used == 1
    step_all([episode], [0], oracle.query, finetune=False)  # a repeat: −1, terminal, no query
    assert episode.done and episode.rewards == [1.0, -1.0] and oracle.used == 1
    assert episode.key_frames == [1, 2, 3, 4, 5, 6, 7]

    lost = _episode()
    step_all([lost], [KEY], oracle.query, finetune=True)  # deleting the key frame loses the goal
    assert lost.done and lost.rewards == [0.0] and oracle.used == 2
    assert lost.key_frames == list(range(T))  # s_0 was the last state that met it
    assert np.array_equal(lost.mask(), lost.spatial)


def test_fine_tuning_reward_is_the_target_probability_and_steps_are_batched():
    oracle = KeyFrameOracle(100)
    clean = toy_clip(0, 0)
    goal = Goal(source_label=0, target_label=2)
    spatial = salient_mask(clean, 0.6, "fine_grained")
    episodes = [Episode.open(clean, toy_clip(2, i), spatial, goal) for i in (1, 2)]
    step_all(episodes, [0, 1], oracle.query, finetune=True)
    assert oracle.used == 2 and len(oracle.log) == 2  # one call, one query per episode
    for episode in episodes:
        assert 0.5 < episode.rewards[0] < 1.0 and not episode.done


def test_deleting_the_last_frame_needs_no_query():
    oracle = KeyFrameOracle(100)
    episode = _episode()
    episode.kept = np.arange(T) == KEY  # every other frame already deleted
    assert episode.proposal(KEY) is None
    step_all([episode], [KEY], oracle.query, finetune=False)
    assert oracle.used == 0 and episode.done and episode.rewards == [0.0]


# --- pre-training (Algorithm 1) ------------------------------------------------------------------------

SMALL = {"actors": 4, "timesteps": 16, "learning_rate": 3e-3, "clips_per_class": 4}


def test_pretraining_stops_cleanly_when_the_budget_ends():
    oracle = KeyFrameOracle(150)
    reports = []
    params = PretrainParams(iterations=50, **SMALL)
    policy, report = pretrain(oracle, T, "untargeted", reference_clips, params, np.random.default_rng(0),
                              classes=3, progress=lambda r: reports.append(dict(r)))
    assert report["stopped"] == "budget"
    assert report["queries"] == oracle.used <= 150
    assert report["iterations"] >= 1 and report["episodes"] > 0 and report["clean_checks"] == 12
    assert len(report["mean_reward"]) == len(report["mean_key_frames"]) == report["iterations"]
    assert reports and reports[-1]["queries"] == report["queries"]
    loaded = load_policy(save_policy(policy))
    assert loaded.header["training"][-1]["stopped"] == "budget"
    assert loaded.header["training"][-1]["queries"] == oracle.used


def test_pretraining_stops_cleanly_at_its_time_limit():
    oracle = KeyFrameOracle(10_000)
    params = PretrainParams(iterations=50, max_seconds=1e-3, seed=4, **SMALL)
    _, report = pretrain(oracle, T, "untargeted", reference_clips, params, np.random.default_rng(0),
                         classes=3)
    assert report["stopped"] == "time_limit" and report["iterations"] == 1
    assert report["queries"] == oracle.used


def test_pretraining_learns_to_keep_the_key_frame():
    oracle = KeyFrameOracle(10_000)
    params = PretrainParams(iterations=25, **SMALL)
    policy, report = pretrain(oracle, T, "untargeted", reference_clips, params, np.random.default_rng(0),
                              classes=3)
    assert report["stopped"] == "iterations" and report["queries"] == oracle.used
    assert np.mean(report["mean_reward"][-5:]) > np.mean(report["mean_reward"][:5]) + 1
    pool = reference_pool(reference_clips, 3, 4, False, 0.6)
    start = pool.episode(0, 5)
    assert policy.probabilities(start.state())[KEY] < 0.05  # the key frame is the last one to delete
    kept = []
    for i in range(12):
        episode = greedy_episode(policy, pool.episode(i, (i + 4) % 12), oracle.query)
        assert KEY in episode.key_frames
        kept.append(len(episode.key_frames))
    assert np.mean(kept) <= 2  # an untrained policy keeps ~7 (its first repeat ends the episode)


# --- the attack (Algorithm 2) -----------------------------------------------------------------------


def run_attack(attack: Rlsb, budget: int, target: int | None = None,
               resume_from: np.ndarray | None = None) -> tuple[KeyFrameOracle, Tracker, dict]:
    clean = toy_clip(0, 0)
    oracle = KeyFrameOracle(budget)
    first = oracle.query(clean[None])[0]
    goal = Goal(source_label=first["label"], target_label=target)
    tracker = Tracker(best=Best(clip=clean, score=goal.score(first), success=False))
    ctx = AttackContext(clean=clean, oracle=oracle, goal=goal, tracker=tracker,
                        rng=np.random.default_rng([attack.params.seed, 0]), reference_clips=reference_clips,
                        resume_from=resume_from)
    try:
        attack.run(ctx)
    except BudgetExhausted:
        pass
    return oracle, tracker, ctx.trace


def rlsb_with_untrained_policy(goal: str = "untargeted", **params) -> Rlsb:
    """A small RLSB holding a seeded, untrained policy (the tests, scripts/query_fingerprints.py)."""
    attack = Rlsb(RlsbParams(**{"initial_directions": 12, "samples": 20, **params}))
    attack.policy = new_policy(T, goal, np.random.default_rng(5))
    return attack


def _attack(**params) -> Rlsb:
    return rlsb_with_untrained_policy("targeted" if params.get("finetune_iterations") else "untargeted",
                                      **params)


def test_without_a_policy_the_attack_asks_for_pretraining_before_any_query():
    with pytest.raises(ValueError, match="pre-train"):
        run_attack(Rlsb(RlsbParams()), budget=100)


def test_untargeted_attack_keeps_the_budget_counts_every_query_and_replays_by_seed():
    first, tracker, trace = run_attack(_attack(seed=3), budget=400)
    second, _, _ = run_attack(_attack(seed=3), budget=400)
    assert first.used <= 400 and first.log == second.log
    assert first.used == 1 + trace["attack_queries"] + trace["pretrain_queries"]
    assert tracker.best.success and KEY in trace["key_frames"]
    assert 0 < trace["mask_density"] < 1 and trace["initial_queries"] > 0 and trace["finetune_queries"] == 0
    assert trace["policy"]["frames"] == T


def test_targeted_attack_fine_tunes_on_the_job_budget_without_touching_the_stored_policy():
    attack = _attack(seed=1, finetune_iterations=1, finetune_timesteps=4)
    before = save_policy(attack.policy)
    oracle, tracker, trace = run_attack(attack, budget=600, target=2)
    assert oracle.used <= 600 and oracle.used == 1 + trace["attack_queries"]
    assert trace["finetune_queries"] > 0 and trace["finetune"]["iterations"] == 1
    assert tracker.best.success and tracker.best.answer["label"] == 2
    assert save_policy(attack.policy) == before


def test_inline_pretraining_spends_only_its_share_of_the_job():
    attack = Rlsb(RlsbParams(initial_directions=6, samples=20, pretrain_inline_queries=120, seed=2))
    oracle, tracker, trace = run_attack(attack, budget=500)
    assert trace["pretrain_queries"] <= 120 and trace["pretrain"]["stopped"] == "budget"
    assert oracle.used <= 500 and oracle.used == 1 + trace["attack_queries"] + trace["pretrain_queries"]
    assert tracker.best.success


def test_a_tiny_budget_ends_the_attack_cleanly():
    oracle, _, trace = run_attack(_attack(seed=0), budget=5)
    assert oracle.used <= 5 and oracle.used == 1 + trace["attack_queries"]


def test_a_redelivered_job_goes_on_from_its_checkpoint_without_scanning_again():
    checkpoint = toy_clip(0, 0)
    checkpoint[KEY, :8] = toy_clip(1, 1)[KEY, :8]  # half of the key frame from another class
    oracle, tracker, trace = run_attack(Rlsb(RlsbParams(samples=20)), budget=200, resume_from=checkpoint)
    assert trace["key_frames"] == [KEY] and trace["initial_queries"] == 0
    assert tracker.best.success and oracle.used == 1 + trace["attack_queries"] <= 200
