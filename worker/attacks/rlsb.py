"""RLSB (Wang, Sha, Yang, IJCAI 2021, "Reinforcement learning based sparse black-box adversarial attack
on video recognition models"). Paper: ../shared/papers/rlsb-wang-ijcai2021.txt

Sign-OPT (attacks/sign_opt.py) whose initial direction is made sparse by a learned policy:

1. Spatial sparsity (Eq. 1): M_spatial = S(x, φ) untargeted, S(x, φ) ∪ S(x̂, φ) targeted, S = the
   fine-grained saliency of Montabone & Soto (attacks/saliency.py), φ = 0.6 (Sec. 4.2).
2. Temporal sparsity: a frame-deletion MDP (Sec. 3.2). State s_t = (x̂ − x) ⊙ M_t (Eq. 2); action
   a_t = a frame to delete; transition D(M_t, a_t) zeroes that frame (Eq. 3); the episode ends when
   x + s_{t+1} no longer meets the goal (untargeted F = ȳ, targeted F ≠ y_adv) or when a_t repeats an
   earlier action. Rewards: Eq. 4 while pre-training (−1 repeat, 0 goal lost, +1 goal kept), Eq. 5
   while fine-tuning (−1, 0, p(y_adv | s_{t+1})). The key-frame mask an episode yields is the mask of
   its last state that still met the goal.
3. Policy π_θp(a | s) and value V_w(s) (Sec. 3.2 "Network Architecture"): 5 convolutions with kernel
   and stride 1 in time, average pooling to one feature per frame, 3 FC layers that see every frame
   (a frame is compared with its neighbours), softmax over the T frames. Trained by PPO (Eq. 8-9:
   ε = 0.2, γ = 0.99, λ = 0.95) in two stages (Algorithm 1): general pre-training on pairs from the
   attacker's reference set (`pretrain`, its own job with its own budget), then, for targeted attacks
   only, fine-tuning on the attacked clip x with x̂ of the target class (Algorithm 2 line 1).
4. The attack (Algorithm 2): for n = 100 clips x̂ (other classes, or the target class) run the policy
   greedily (Eq. 7) to get M; θ = (x̂ − x) ⊙ M / ‖·‖ (Eq. 13); g(θ) by binary search; keep the θ with
   the smallest MAP (lines 10-11); then Sign-OPT (Eq. 11-12) with its random directions masked by M*,
   until the MAP bound (3 / 9) or T_ai = 1000 iterations (Sec. 4.3).

What this implementation decides where the paper is silent or cannot apply as written:

- Network sizes (not given): channels 8-16-16-32-32 (3×3, stride 2, per frame), FC 32T → 128 → 64 →
  T (policy) / 1 (value): 92 560 + 91 585 parameters at T = 16 (`parameter_count`), small enough for
  PPO on one CPU thread. Per-frame 2D convolutions are exactly 3D convolutions with kernel 1 × 3 × 3 and
  stride 1 × 2 × 2. The input is s_t / 255, in [−1, 1]; H × W may be anything, T is fixed per policy.
- Algorithm 1's I, N, T_ts, K, M and the learning rate are not given: `PretrainParams` documents the
  CPU-sized defaults. PPO (attacks/ppo.py) with the usual companions (Schulman et al. 2017): a value
  loss (×0.5) and an entropy bonus (×0.01), advantages normalised per batch; π and V have separate
  Adam optimisers and gradient clipping (one clipping over both let V's errors swamp π's gradient).
  Networks use He initialisation: PyTorch's default shrank the signal so much that a deleted (zero)
  frame's feature was indistinguishable from a kept one's, and repeats could not be learned.
- X and X̂ (Sec. 4.1: the training set for both) are the attacker-owned reference clips; ȳ is a clip's
  own class, y_adv the class of x̂ (≠ ȳ). As the paper "only consider[s] videos that are correctly
  predicted", a reference clip x is used once the oracle has put it in its class (one query per clip,
  remembered); a pair whose s_0 misses the goal is skipped (one query).
- Queries: every non-repeat step is one query, batched over the N actors; a repeat needs none; deleting
  the last remaining frame leaves x itself, whose answer is known (ȳ, checked above), so it needs none.
- Greedy runs (Eq. 7) may choose a frame already deleted: that ends the episode like any repeat.
- Algorithm 2 line 6 re-queries x + (x̂ − x) ⊙ M: the episode's last goal-meeting state already has
  that answer, so it is not asked twice. Line 10 compares MAPs: a candidate that is not adversarial at
  the λ where its MAP would equal the best so far cannot win, so one query rules it out (OPT's pruning,
  on MAP instead of g). The scan ends early once the MAP bound is met (as attacks/heuristic.py).
- Fine-tuning (targeted; untargeted skips it, Sec. 3.3) runs Algorithm 1 with x fixed and x̂ drawn from
  the same target-class clips the scan uses; its queries go through the job's oracle (counted in the
  job, `trace.finetune_queries`) and any adversarial clip it meets is offered to the tracker. The loaded
  policy itself is never changed (a copy is fine-tuned).
- A redelivered job resumes from its checkpoint: the scan and fine-tuning were paid for before, so
  Sign-OPT goes on at once, masked by the checkpoint's perturbed pixels.
- No policy: `attack.policy` is set by the runner (a pre-training job's `save_policy` bytes through
  `load_policy`); without one the attack fails with a ValueError, unless `pretrain_inline_queries` > 0
  asks it to pre-train inside the job from scratch, with that many of the job's queries.
- Trace: `key_frames`, `mask_density` (of M*), `kept_frames` (per scanned x̂), `initial_queries` (the
  scan), `finetune_queries`, `pretrain_queries` (inline only), `attack_queries` (everything through
  g(θ)'s Boundary: fine-tuning, scan, Sign-OPT), and the policy's header (frames, goal, training).

Measured with the benchmark grid's pre-trained policy (benchmarks/policies/mini_c3d-untargeted.pt:
100 iterations, 15 831 queries, against the paper's ~17 600):
`.venv/bin/python scripts/bench_attacks.py probe --model mini_c3d --clip 12 --attack rlsb --budget 15000`
keeps 5 key frames (7, 8, 9, 11, 12) and reaches MAP 1.59 ≤ 3 in 31 queries (29 of them the scan),
before any Sign-OPT iteration.
"""
from __future__ import annotations

import copy
import functools
import io
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from model_server.protocol import Prediction
from worker.attacks.base import AttackContext, Goal
from worker.attacks.boundary import INF, Boundary, unit
from worker.attacks.opt import candidate_clips
from worker.attacks.primitives import one_thread
from worker.attacks.saliency import frame_mask, salient_mask
from worker.attacks.sign_opt import SignOpt, SignOptParams
from worker.oracle_client import BudgetExhausted

if TYPE_CHECKING:
    import torch

GoalKind = Literal["untargeted", "targeted"]
Ask = Callable[[np.ndarray], list[Prediction]]
Start = tuple[np.ndarray | None, float, np.ndarray | None]  # (θ, g(θ), mask) for Sign-OPT

POLICY_FORMAT = "rlsb-policy/1"
CHANNELS = (8, 16, 16, 32, 32)  # the 5 per-frame convolutions (3×3, stride 2)
HIDDEN = (128, 64)  # the first two of the 3 FC layers
PHI = 0.6  # salient area ratio φ (Sec. 4.2)
MAX_EMPTY_ROUNDS = 50  # draws of pairs in a row that open no episode before training gives up


class NoUsablePairs(RuntimeError):
    """No (x, x̂) pair met the goal at s_0: there is nothing to learn from."""


# --- parameters --------------------------------------------------------------------------------------


class PretrainParams(BaseModel):
    """Algorithm 1. The paper gives ε, γ, λ only; the rest are CPU-sized choices made here.

    Per iteration N × T_ts = 128 steps (≈ 150 queries with the s_0 checks): 100 iterations are about
    the paper's pre-training cost (17 600 queries untargeted, Sec. 4.3); a job's budget usually ends it
    first. K = 4 epochs of minibatches of 32 states: one iteration took ~12 s on one (shared) CPU
    thread at 16×112×112 with mini_c3d answering in process. lr 1e-3: 3e-3 was unstable on mini_c3d.
    """

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(100, ge=1, le=100_000,
                            description="I: PPO iterations (choice; the budget usually ends it first).")
    actors: int = Field(4, ge=1, le=64,
                        description="N: parallel actors, each step's clips in one query (choice).")
    timesteps: int = Field(32, ge=1, le=4096,
                           description="T_ts: steps each actor collects per iteration (choice).")
    epochs: int = Field(4, ge=1, le=50, description="K: PPO epochs per iteration (choice).")
    minibatch: int = Field(32, ge=1, le=1024, description="M ≤ N·T_ts: states per gradient step (choice).")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="Adam step (choice, as AstFocus).")
    clip: float = Field(0.2, gt=0, lt=1, description="ε_p of the clipped surrogate (Eq. 8; paper 0.2).")
    gamma: float = Field(0.99, gt=0, le=1, description="γ (Eq. 9; paper 0.99).")
    lam: float = Field(0.95, ge=0, le=1, description="λ of the advantage estimator (Eq. 9; paper 0.95).")
    value_coef: float = Field(0.5, ge=0, description="Weight of V_w's squared error (PPO's c1; choice).")
    entropy_coef: float = Field(0.01, ge=0, description="Entropy bonus (PPO's c2; choice).")
    saliency_ratio: float = Field(PHI, gt=0, le=1, description="φ of M_spatial (Eq. 1; paper 0.6).")
    clips_per_class: int = Field(8, ge=1, le=512, description="Reference clips per class in X = X̂ (choice).")
    max_seconds: float | None = Field(None, gt=0, description="Stop cleanly after the iteration that passes "
                                                              "this wall time (None = no limit).")
    seed: int = Field(
        0, ge=0, le=2**63 - 1, description="Seed of the job's RNG (the caller builds `rng` from it)."
    )


class RlsbParams(SignOptParams):
    initial_directions: int = Field(100, ge=1, le=1000,
                                    description="n: clips x̂ scanned (Algorithm 2; paper 100).")
    saliency_ratio: float = Field(PHI, gt=0, le=1,
                                  description="φ: salient area ratio per frame (Eq. 1; paper 0.6).")
    finetune_iterations: int = Field(
        3, ge=0, le=1000,
        description="Targeted only: PPO iterations of fine-tuning on x (Algorithm 2 line 1; queries count "
                    "in this job; 0 = none). Untargeted attacks skip it, as the paper does.",
    )
    finetune_timesteps: int = Field(16, ge=1, le=4096,
                                    description="T_ts per actor while fine-tuning (choice).")
    policy: str | None = Field(
        None, description="Stored policy (its pre-training job) to use; None = the model's latest for the "
                          "goal. The runner loads it into `attack.policy`.",
    )
    pretrain_inline_queries: int = Field(
        0, ge=0,
        description="Without a stored policy: pre-train inside this job with this many of its queries "
                    "(0 = refuse, and ask for a pre-training job first).",
    )


# --- the MDP (Eq. 2-5) -------------------------------------------------------------------------------


def delete_frame(mask: np.ndarray, action: int) -> np.ndarray:
    """D(M_t, a_t) of Eq. 3: a copy of the mask with frame a_t zeroed (any mask with time first)."""
    deleted = mask.copy()
    deleted[action] = 0
    return deleted


def reward(repeat: bool, met: bool, probability: float, finetune: bool) -> float:
    """r_t of Eq. 4 (pre-training) or Eq. 5 (fine-tuning: p(y_adv | s_{t+1}) when the goal holds)."""
    if repeat:
        return -1.0
    if not met:
        return 0.0
    return float(probability) if finetune else 1.0


@dataclass
class Episode:
    """One run of the frame-deletion MDP for a pair (x, x̂), with what PPO needs of every step."""

    clean: np.ndarray  # x, uint8 T×H×W×3
    delta: np.ndarray  # (x̂ − x) ⊙ M_spatial, int16: s_0 on the 0-255 scale (Eq. 2)
    spatial: np.ndarray  # M_spatial, float32 T×H×W×1 (Eq. 1)
    goal: Goal  # ȳ, and y_adv for targeted pairs
    kept: np.ndarray = field(init=False)  # bool T: the temporal part of M_t
    met: np.ndarray = field(init=False)  # the frames of the last state that met the goal
    before: list[np.ndarray] = field(default_factory=list)  # `kept` before each step (the state s_t)
    actions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    done: bool = False

    def __post_init__(self) -> None:
        self.kept = np.ones(len(self.clean), dtype=bool)
        self.met = self.kept.copy()

    @classmethod
    def open(cls, clean: np.ndarray, reference: np.ndarray, spatial: np.ndarray, goal: Goal) -> Episode:
        delta = (reference.astype(np.int16) - clean.astype(np.int16)) * spatial.astype(np.int16)
        return cls(clean=clean, delta=delta, spatial=spatial, goal=goal)

    def state(self, kept: np.ndarray | None = None) -> np.ndarray:
        """s_t = (x̂ − x) ⊙ M_t (Eq. 2) scaled to [−1, 1]: the networks' input."""
        kept = self.kept if kept is None else kept
        return self.delta.astype(np.float32) * (kept[:, None, None, None] / np.float32(255.0))

    def clip(self, kept: np.ndarray | None = None) -> np.ndarray:
        """x + s_t: exactly x̂ on the mask, x elsewhere (uint8, no rounding needed)."""
        kept = self.kept if kept is None else kept
        return (self.clean.astype(np.int16) + self.delta * kept[:, None, None, None]).astype(np.uint8)

    def proposal(self, action: int) -> np.ndarray | None:
        """The clip x + s_{t+1} the oracle must judge; None when the answer is known without a query:
        a repeat (terminal at once) or deleting the last frame (x itself, which never meets the goal)."""
        if not self.kept[action]:
            return None
        after = delete_frame(self.kept, action)
        return self.clip(after) if after.any() else None

    def advance(self, action: int, answer: Prediction | None, finetune: bool,
                log_prob: float = 0.0, value: float = 0.0) -> float:
        """Apply a_t (Eq. 3) with the oracle's answer for s_{t+1}; returns r_t (Eq. 4 / Eq. 5)."""
        self.before.append(self.kept)
        self.actions.append(action)
        self.log_probs.append(log_prob)
        self.values.append(value)
        repeat = not self.kept[action]
        met = False
        if not repeat:
            self.kept = delete_frame(self.kept, action)
            met = answer is not None and self.goal.is_met(answer["label"])
            if met:
                self.met = self.kept
        r = reward(repeat, met, answer["probability"] if answer is not None else 0.0, finetune)
        self.rewards.append(r)
        self.done = not met
        return r

    @property
    def key_frames(self) -> list[int]:
        return np.flatnonzero(self.met).tolist()

    def mask(self) -> np.ndarray:
        """M of the last goal-meeting state: M_spatial on the key frames (T×H×W×1 float32)."""
        return self.spatial * frame_mask(len(self.met), self.key_frames)

    def direction(self) -> tuple[np.ndarray, float]:
        """θ of Eq. 13 on [0, 1] pixel values and ‖(x̂ − x) ⊙ M‖ (the λ at which x + λθ is that clip)."""
        return unit(self.delta.astype(np.float32) * (self.met[:, None, None, None] / np.float32(255.0)))


def step_all(episodes: Sequence[Episode], actions: Sequence[int], ask: Ask, finetune: bool,
             log_probs: Sequence[float] | None = None, values: Sequence[float] | None = None) -> None:
    """One MDP step for several episodes with ONE oracle call for every clip that needs an answer."""
    proposals = [episode.proposal(action) for episode, action in zip(episodes, actions, strict=True)]
    asked = [clip for clip in proposals if clip is not None]
    answers = iter(ask(np.stack(asked)) if asked else [])
    for i, (episode, action, clip) in enumerate(zip(episodes, actions, proposals, strict=True)):
        episode.advance(action, next(answers) if clip is not None else None, finetune,
                        0.0 if log_probs is None else log_probs[i], 0.0 if values is None else values[i])


# --- the policy and value networks (Sec. 3.2) ---------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _frame_net() -> type:
    """The network class, built on first use so that importing the attack registry never loads torch."""
    from torch import nn

    class FrameNet(nn.Module):
        """5 per-frame convolutions → average pooling → 3 FC layers over all T frames' features."""

        def __init__(self, frames: int, outputs: int, channels: Sequence[int], hidden: Sequence[int]) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            previous = 3
            for width in channels:  # kernel and stride 1 in time: each frame on its own
                layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.ReLU()]
                previous = width
            self.convs = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            sizes = [frames * previous, *hidden, outputs]
            fcs: list[nn.Module] = []
            for i in range(len(sizes) - 1):
                fcs.append(nn.Linear(sizes[i], sizes[i + 1]))
                if i < len(sizes) - 2:
                    fcs.append(nn.ReLU())
            self.fcs = nn.Sequential(*fcs)
            self.frames = frames
            for module in self.modules():  # He initialisation: torch's default shrinks the signal ~3× per
                if isinstance(module, (nn.Conv2d, nn.Linear)):  # layer, and a deleted (zero) frame then
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")  # looks like any other
                    nn.init.zeros_(module.bias)

        def forward(self, states: torch.Tensor) -> torch.Tensor:
            """B×T×H×W×3 states → B×outputs."""
            b, t, h, w, c = states.shape
            frames = states.permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w)
            features = self.pool(self.convs(frames)).reshape(b, -1)  # T per-frame features, in order
            return self.fcs(features)

    return FrameNet


def parameter_count(frames: int, outputs: int, channels: Sequence[int] = CHANNELS,
                    hidden: Sequence[int] = HIDDEN) -> int:
    """Parameters of one network: T = 16 gives 92 560 (policy, outputs = T) and 91 585 (value)."""
    convs, previous = 0, 3
    for width in channels:
        convs += previous * width * 9 + width
        previous = width
    sizes = [frames * previous, *hidden, outputs]
    return convs + sum(a * b + b for a, b in pairwise(sizes))


@dataclass
class RlsbPolicy:
    """π_θp (actor) and V_w (critic) with a JSON-able header: frames, goal, sizes, training summary."""

    actor: torch.nn.Module
    critic: torch.nn.Module
    header: dict

    @property
    def frames(self) -> int:
        return int(self.header["frames"])

    @property
    def goal(self) -> GoalKind:
        return self.header["goal"]

    def act(self, states: Sequence[np.ndarray], rng: np.random.Generator | None,
            ) -> tuple[list[int], list[float], list[float]]:
        """Actions for a batch of states: sampled (Eq. 6) with `rng`, argmax (Eq. 7) without; their
        log π(a|s) and V(s)."""
        import torch

        with one_thread(), torch.no_grad():
            batch = torch.from_numpy(np.stack(states))
            log_pi = torch.log_softmax(self.actor(batch), dim=1)
            values = self.critic(batch)[:, 0].tolist() if rng is not None else [0.0] * len(states)
        probabilities = log_pi.exp().numpy().astype(np.float64)
        if rng is None:
            actions = probabilities.argmax(axis=1).tolist()
        else:  # the job's RNG draws, so a seed replays the job
            actions = [int(min(np.searchsorted(np.cumsum(p), rng.random() * p.sum()), len(p) - 1))
                       for p in probabilities]
        chosen = log_pi[torch.arange(len(actions)), torch.tensor(actions)].tolist()
        return actions, chosen, values

    def probabilities(self, state: np.ndarray) -> np.ndarray:
        """π(· | s): the T deletion probabilities of one state."""
        import torch

        with one_thread(), torch.no_grad():
            return torch.softmax(self.actor(torch.from_numpy(state[None])), dim=1)[0].numpy()


def new_policy(frames: int, goal: GoalKind, rng: np.random.Generator, channels: Sequence[int] = CHANNELS,
               hidden: Sequence[int] = HIDDEN) -> RlsbPolicy:
    """Algorithm 1 line 1: fresh θ_p and w, seeded from the job's RNG."""
    import torch

    net = _frame_net()
    seed = int(rng.integers(2**31))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        actor, critic = net(frames, frames, channels, hidden), net(frames, 1, channels, hidden)
        with torch.no_grad():  # start near the uniform policy (usual PPO practice)
            actor.fcs[-1].weight.mul_(0.01)
            actor.fcs[-1].bias.zero_()
    header = {"format": POLICY_FORMAT, "frames": frames, "goal": goal, "channels": list(channels),
              "hidden": list(hidden), "training": []}
    return RlsbPolicy(actor, critic, header)


def save_policy(policy: RlsbPolicy) -> bytes:
    """The policy as bytes (torch.save of the state dicts and the header) for the DB/artifact store."""
    import torch

    buffer = io.BytesIO()
    torch.save({"header": policy.header, "actor": policy.actor.state_dict(),
                "critic": policy.critic.state_dict()}, buffer)
    return buffer.getvalue()


def load_policy(data: bytes) -> RlsbPolicy:
    """A stored policy back (weights_only: a stored blob can never run code)."""
    import torch

    stored = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    header = stored["header"]
    if header.get("format") != POLICY_FORMAT:
        raise ValueError(f"not an RLSB policy (format {header.get('format')!r}, expected {POLICY_FORMAT!r})")
    net = _frame_net()
    frames, channels, hidden = int(header["frames"]), header["channels"], header["hidden"]
    actor, critic = net(frames, frames, channels, hidden), net(frames, 1, channels, hidden)
    actor.load_state_dict(stored["actor"])
    critic.load_state_dict(stored["critic"])
    return RlsbPolicy(actor, critic, header)


# --- where episodes come from -------------------------------------------------------------------------


@dataclass
class PairPool:
    """Clean clips X and reference clips X̂ with labels, cached saliency masks and verified cleans.

    Pre-training: X = X̂ = the reference set (Sec. 4.1). Fine-tuning: X = {the attacked clip},
    X̂ = clips of the target class.
    """

    cleans: np.ndarray
    clean_labels: np.ndarray
    references: np.ndarray
    reference_labels: np.ndarray
    targeted: bool
    ratio: float
    verified: dict[int, bool] = field(default_factory=dict)  # clean index → the oracle agrees with its label
    _masks: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """Algorithm 1 line 5: a random x (still possibly correct) and x̂ of another class."""
        candidates = [i for i in range(len(self.cleans)) if self.verified.get(i, True)]
        if not candidates:
            raise NoUsablePairs("the oracle puts none of the clean clips in their own class")
        i = candidates[int(rng.integers(len(candidates)))]
        others = np.flatnonzero(self.reference_labels != self.clean_labels[i])
        if len(others) == 0:
            raise NoUsablePairs("no reference clip of another class")
        return i, int(others[int(rng.integers(len(others)))])

    def saliency(self, which: str, index: int) -> np.ndarray:
        if self.references is self.cleans:
            which = "clean"  # pre-training: one set, one cache
        if (which, index) not in self._masks:
            clip = (self.cleans if which == "clean" else self.references)[index]
            self._masks[which, index] = salient_mask(clip, self.ratio, "fine_grained")
        return self._masks[which, index]

    def episode(self, i: int, j: int) -> Episode:
        """s_0 = (x̂ − x) ⊙ M_spatial with Eq. 1's mask for the goal kind."""
        spatial = self.saliency("clean", i)
        if self.targeted:
            spatial = np.maximum(spatial, self.saliency("reference", j))
        target = int(self.reference_labels[j]) if self.targeted else None
        goal = Goal(source_label=int(self.clean_labels[i]), target_label=target)
        return Episode.open(self.cleans[i], self.references[j], spatial, goal)


def reference_pool(reference_clips: Callable[[int, int], np.ndarray], classes: int, per_class: int,
                   targeted: bool, ratio: float) -> PairPool:
    clips = np.concatenate([reference_clips(label, per_class) for label in range(classes)])
    labels = np.repeat(np.arange(classes), per_class)
    return PairPool(clips, labels, clips, labels, targeted, ratio)


def open_episodes(count: int, pool: PairPool, ask: Ask, rng: np.random.Generator,
                  stats: dict) -> list[Episode]:
    """`count` episodes whose s_0 meets the goal; checks each new clean clip once, skips failed pairs."""
    opened: list[Episode] = []
    empty_rounds = 0
    while len(opened) < count:
        draws = [pool.draw(rng) for _ in range(count - len(opened))]
        unknown = sorted({i for i, _ in draws if i not in pool.verified})
        if unknown:  # "only consider videos that are correctly predicted" (Sec. 4.1)
            for i, answer in zip(unknown, ask(pool.cleans[unknown]), strict=True):
                pool.verified[i] = answer["label"] == int(pool.clean_labels[i])
            stats["clean_checks"] += len(unknown)
        episodes = [pool.episode(i, j) for i, j in draws if pool.verified[i]]
        before = len(opened)
        if episodes:
            for episode, answer in zip(episodes, ask(np.stack([e.clip() for e in episodes])), strict=True):
                if episode.goal.is_met(answer["label"]):
                    opened.append(episode)
                else:
                    stats["skipped_pairs"] += 1
        empty_rounds = 0 if len(opened) > before else empty_rounds + 1
        if empty_rounds >= MAX_EMPTY_ROUNDS:
            raise NoUsablePairs(f"{MAX_EMPTY_ROUNDS} draws in a row gave no pair whose s_0 meets the goal")
    return opened


# --- PPO (Algorithm 1) --------------------------------------------------------------------------------


class _Counted:
    """`ask` that counts the answers it got (the queries a training run spent)."""

    def __init__(self, ask: Ask) -> None:
        self.ask, self.queries = ask, 0

    def __call__(self, clips: np.ndarray) -> list[Prediction]:
        answers = self.ask(clips)
        self.queries += len(answers)
        return answers


def collect(policy: RlsbPolicy, pool: PairPool, ask: Ask, params: PretrainParams, rng: np.random.Generator,
            finetune: bool, into: list[Episode], stats: dict) -> None:
    """Algorithm 1 lines 3-10: N actors collect T_ts steps each (episodes are run to their end).

    The actors step together so that each step's clips go to the oracle in one call; finished episodes
    are appended to `into` as they end, so a budget that ends mid-way keeps them.
    """
    steps = [0] * params.actors
    current: list[Episode | None] = [None] * params.actors
    while True:
        idle = [a for a in range(params.actors) if current[a] is None and steps[a] < params.timesteps]
        opened = open_episodes(len(idle), pool, ask, rng, stats) if idle else []
        for a, episode in zip(idle, opened, strict=True):
            current[a] = episode
        active = [a for a in range(params.actors) if current[a] is not None]
        if not active:
            return
        episodes = [current[a] for a in active]
        actions, log_probs, values = policy.act([e.state() for e in episodes], rng)
        step_all(episodes, actions, ask, finetune, log_probs, values)
        for a, episode in zip(active, episodes, strict=True):
            steps[a] += 1
            if episode.done:
                into.append(episode)
                current[a] = None


def ppo_epochs(policy: RlsbPolicy, optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
               episodes: list[Episode], params: PretrainParams, rng: np.random.Generator) -> float:
    """Algorithm 1 lines 11-14: advantages by Eq. 9 per episode, then K epochs of minibatches of M.

    π_θp and V_w share no parameters, so each has its own Adam and its own gradient clipping: with one
    clipping over both, V's squared errors (returns up to T) swamp π's gradient and the policy hardly
    moves (measured: on mini_c3d it never learned to avoid repeats).
    """
    import torch

    from worker.attacks.ppo import clipped_surrogate, generalized_advantages, ppo_update

    samples: list[tuple[Episode, int]] = []
    advantages: list[float] = []
    returns: list[float] = []
    for episode in episodes:  # every episode ended in a terminal state: V(s_G) = 0
        adv, ret = generalized_advantages(episode.rewards, episode.values, params.gamma, params.lam, 0.0)
        samples += [(episode, t) for t in range(len(adv))]
        advantages += adv
        returns += ret
    adv_all = torch.tensor(advantages, dtype=torch.float32)
    if len(adv_all) > 1 and float(adv_all.std()) > 0:
        adv_all = (adv_all - adv_all.mean()) / (adv_all.std() + 1e-8)
    ret_all = torch.tensor(returns, dtype=torch.float32)
    actions_all = torch.tensor([e.actions[t] for e, t in samples])
    old_all = torch.tensor([e.log_probs[t] for e, t in samples], dtype=torch.float32)
    loss_value = 0.0
    for _ in range(params.epochs):
        order = rng.permutation(len(samples))
        for start in range(0, len(order), params.minibatch):
            chosen = order[start : start + params.minibatch]
            states = torch.from_numpy(np.stack([samples[k][0].state(samples[k][0].before[samples[k][1]])
                                                for k in chosen]))
            index = torch.from_numpy(chosen)

            def policy_loss(states: torch.Tensor = states, index: torch.Tensor = index) -> torch.Tensor:
                log_pi = torch.log_softmax(policy.actor(states), dim=1)
                new = log_pi.gather(1, actions_all[index][:, None])[:, 0]
                entropy = -(log_pi.exp() * log_pi).sum(dim=1).mean()
                surrogate = clipped_surrogate(new, old_all[index], adv_all[index], params.clip)
                return surrogate - params.entropy_coef * entropy

            def value_loss(states: torch.Tensor = states, index: torch.Tensor = index) -> torch.Tensor:
                value = policy.critic(states)[:, 0]
                return params.value_coef * torch.nn.functional.mse_loss(value, ret_all[index])

            loss_value = ppo_update(policy_loss, optimizers[0], epochs=1)
            ppo_update(value_loss, optimizers[1], epochs=1)
    return loss_value


def train(policy: RlsbPolicy, pool: PairPool, ask: Ask, params: PretrainParams, rng: np.random.Generator,
          finetune: bool, progress: Callable[[dict], None] | None = None) -> dict:
    """Algorithm 1 on `policy` in place; returns the report. Stops cleanly when the budget ends."""
    import torch

    counted = _Counted(ask)
    optimizers = (torch.optim.Adam(policy.actor.parameters(), lr=params.learning_rate),
                  torch.optim.Adam(policy.critic.parameters(), lr=params.learning_rate))
    report: dict = {"stage": "finetune" if finetune else "pretrain", "goal": policy.goal, "iterations": 0,
                    "queries": 0, "episodes": 0, "clean_checks": 0, "skipped_pairs": 0, "mean_reward": [],
                    "mean_key_frames": [], "repeat_endings": [], "loss": [], "stopped": None}
    started = time.monotonic()
    for _ in range(params.iterations):
        episodes: list[Episode] = []
        stopped = None
        try:
            collect(policy, pool, counted, params, rng, finetune, episodes, report)
        except BudgetExhausted:
            stopped = "budget"
        except NoUsablePairs as exc:
            stopped, report["error"] = "no_usable_pairs", str(exc)
        if episodes:  # a cut-short iteration still learns from the episodes it finished
            with one_thread():
                report["loss"].append(round(ppo_epochs(policy, optimizers, episodes, params, rng), 5))
            report["iterations"] += 1
            report["episodes"] += len(episodes)
            report["mean_reward"].append(round(float(np.mean([sum(e.rewards) for e in episodes])), 4))
            report["mean_key_frames"].append(round(float(np.mean([e.met.sum() for e in episodes])), 3))
            report["repeat_endings"].append(round(float(np.mean([e.rewards[-1] < 0 for e in episodes])), 3))
        report.update(queries=counted.queries, seconds=round(time.monotonic() - started, 2))
        if stopped is None and params.max_seconds is not None and report["seconds"] >= params.max_seconds:
            stopped = "time_limit"
        report["stopped"] = stopped
        if progress is not None:
            progress(report)  # the caller persists progress (and may cancel by raising)
        if stopped:
            break
    report["stopped"] = report["stopped"] or "iterations"
    policy.header["training"] = [*policy.header.get("training", []), _summary(report, params)]
    return report


def _summary(report: dict, params: PretrainParams) -> dict:
    return {key: report[key] for key in ("stage", "iterations", "queries", "episodes", "stopped")} | {
        "final_mean_reward": report["mean_reward"][-1] if report["mean_reward"] else None,
        "params": params.model_dump(),
    }


def pretrain(oracle: object, frames: int, goal: GoalKind, reference_clips: Callable[[int, int], np.ndarray],
             params: PretrainParams, rng: np.random.Generator, classes: int | None = None,
             progress: Callable[[dict], None] | None = None,
             policy: RlsbPolicy | None = None) -> tuple[RlsbPolicy, dict]:
    """Stage one (Algorithm 1 with Eq. 4): a general policy from pairs of reference clips.

    `oracle.query(clips)` answers (and raises BudgetExhausted when the job's budget ends: the policy
    trained so far is returned, `report["stopped"] == "budget"`). `reference_clips(label, n)` gives the
    attacker's clips of a class; `classes` defaults to the dataset's. `progress(report)` runs after
    every iteration (it may raise to cancel). Store the result with `save_policy`.
    """
    if classes is None:
        from model_server.dataset import CLASS_NAMES

        classes = len(CLASS_NAMES)
    policy = policy or new_policy(frames, goal, rng)
    pool = reference_pool(reference_clips, classes, params.clips_per_class, goal == "targeted",
                          params.saliency_ratio)
    if pool.cleans.shape[1] != frames:
        raise ValueError(f"reference clips have {pool.cleans.shape[1]} frames, the policy {frames}")
    report = train(policy, pool, lambda clips: oracle.query(clips), params, rng, finetune=False,
                   progress=progress)
    return policy, report


def finetune(policy: RlsbPolicy, ask: Ask, clean: np.ndarray, goal: Goal, references: np.ndarray,
             params: PretrainParams, rng: np.random.Generator) -> tuple[RlsbPolicy, dict]:
    """Stage two (Algorithm 2 line 1, Eq. 5): a copy of the policy tuned on x with x̂ of the target class."""
    tuned = copy.deepcopy(policy)
    labels = np.full(len(references), goal.target_label)
    pool = PairPool(clean[None], np.array([goal.source_label]), references, labels, True,
                    params.saliency_ratio, verified={0: True})  # the runner's first query put x in ȳ
    report = train(tuned, pool, ask, params, rng, finetune=True)
    return tuned, report


def greedy_episode(policy: RlsbPolicy, episode: Episode, ask: Ask) -> Episode:
    """Algorithm 2 line 5: run π greedily (Eq. 7) until a terminal state; one query per step."""
    while not episode.done:
        actions, _, _ = policy.act([episode.state()], None)
        step_all([episode], actions, ask, finetune=False)
    return episode


# --- the attack (Algorithm 2) -------------------------------------------------------------------------


class _Capped:
    """The job's oracle with a sub-budget: inline pre-training may spend only its share of the job."""

    def __init__(self, oracle: object, limit: int) -> None:
        self.oracle, self.limit, self.used = oracle, limit, 0

    def query(self, clips: np.ndarray, partial: bool = False) -> list[Prediction]:
        if len(clips) > self.limit - self.used:
            raise BudgetExhausted(f"inline pre-training: {len(clips)} asked, {self.limit - self.used} left")
        answers = self.oracle.query(clips, partial=partial)
        self.used += len(answers)
        return answers


class Rlsb(SignOpt):
    name = "rlsb"
    description = ("RLSB (Wang et al. 2021): a PPO-trained policy deletes unimportant frames of salient "
                   "regions to give Sign-OPT a sparse start; needs a pre-trained policy.")
    Params = RlsbParams
    params: RlsbParams

    def __init__(self, params: RlsbParams, policy: RlsbPolicy | None = None) -> None:
        super().__init__(params)
        self.policy = policy  # set by the runner: load_policy(the stored pre-training result)
        self._boundary: Boundary | None = None

    def run(self, ctx: AttackContext) -> None:
        if self.policy is None and self.params.pretrain_inline_queries == 0 and ctx.resume_from is None:
            raise ValueError("RLSB needs a pre-trained policy for this model: run an RLSB pre-training job "
                             "first (or set pretrain_inline_queries to pre-train inside this job)")
        if self.policy is not None and self.policy.frames != len(ctx.clean):
            raise ValueError(f"the policy was trained on {self.policy.frames}-frame clips, this clip has "
                             f"{len(ctx.clean)} frames")
        try:
            super().run(ctx)
        finally:  # every query of the job is in one of these two counts
            ctx.trace["attack_queries"] = 0 if self._boundary is None else self._boundary.queries
            ctx.trace.setdefault("pretrain_queries", 0)

    def start(self, ctx: AttackContext, boundary: Boundary) -> Start:
        self._boundary = boundary
        ctx.trace.update({"variant": self.name, "saliency_ratio": self.params.saliency_ratio,
                          "pretrain_queries": 0, "finetune_queries": 0, "initial_queries": 0})
        if ctx.resume_from is not None:
            return self._resume(ctx, boundary)
        if ctx.reference_clips is None:
            raise ValueError(f"RLSB starts from attacker-owned clips; this service has none for "
                             f"'{ctx.victim}'")
        policy = self._policy(ctx)
        if ctx.goal.targeted:  # X̂: the target-class clips the scan uses, rendered once for both
            references = ctx.reference_clips(ctx.goal.target_label, self.params.initial_directions)
            policy = self._finetune(ctx, boundary, policy, references)
            candidates = iter(references)
        else:
            candidates = candidate_clips(ctx, self.params.initial_directions)
        before = boundary.queries
        theta, g, mask = self._scan(ctx, boundary, policy, candidates)
        ctx.trace["initial_queries"] = boundary.queries - before
        return theta, g, mask

    # ------------------------------------------------------------------ the policy for this job
    def _policy(self, ctx: AttackContext) -> RlsbPolicy:
        goal: GoalKind = "targeted" if ctx.goal.targeted else "untargeted"
        policy = self.policy
        if policy is None:  # run() allowed this only with an inline budget
            capped = _Capped(ctx.oracle, self.params.pretrain_inline_queries)
            params = PretrainParams(saliency_ratio=self.params.saliency_ratio)
            policy, report = pretrain(capped, len(ctx.clean), goal, ctx.reference_clips, params, ctx.rng)
            ctx.trace["pretrain_queries"] = capped.used
            ctx.trace["pretrain"] = _brief(report)
        header = policy.header
        ctx.trace["policy"] = {"frames": header["frames"], "goal": header["goal"],
                               "training": [{k: v for k, v in t.items() if k != "params"}
                                            for t in header.get("training", [])]}
        if header["goal"] != goal:
            ctx.trace["policy"]["note"] = f"a {header['goal']} policy used for a {goal} attack"
        return policy

    def _finetune(self, ctx: AttackContext, boundary: Boundary, policy: RlsbPolicy,
                  references: np.ndarray) -> RlsbPolicy:
        """Algorithm 2 line 1: Eq. 5 rewards on x, through the job's oracle (adversarial answers kept)."""
        p = self.params
        if p.finetune_iterations == 0:
            return policy
        params = PretrainParams(iterations=p.finetune_iterations, timesteps=p.finetune_timesteps,
                                saliency_ratio=p.saliency_ratio)
        before = boundary.queries
        tuned, report = finetune(policy, boundary.ask, ctx.clean, ctx.goal, references, params, ctx.rng)
        ctx.trace["finetune_queries"] = boundary.queries - before
        ctx.trace["finetune"] = _brief(report)
        return tuned

    # ------------------------------------------------------------------ Algorithm 2, lines 2-14
    def _scan(self, ctx: AttackContext, boundary: Boundary, policy: RlsbPolicy,
              candidates: Iterator[np.ndarray]) -> Start:
        p, targeted = self.params, ctx.goal.targeted
        bound = p.bound(targeted)
        clean_saliency = salient_mask(ctx.clean, p.saliency_ratio, "fine_grained")
        best: Start = (None, INF, None)
        best_map, scanned, starts, kept_counts = INF, 0, 0, []
        for reference in candidates:
            if boundary.best_map <= bound:
                break  # the stop rule holds during the scan too
            scanned += 1
            spatial = clean_saliency
            if targeted:  # Eq. 1 (T): S(x, φ) ∪ S(x̂, φ)
                spatial = np.maximum(spatial, salient_mask(reference, p.saliency_ratio, "fine_grained"))
            episode = Episode.open(ctx.clean, reference, spatial, ctx.goal)
            if not boundary.adversarial_clips(episode.clip()[None])[0]:
                continue  # s_0 already misses the goal: no direction here
            starts += 1
            greedy_episode(policy, episode, boundary.ask)
            kept_counts.append(int(episode.met.sum()))
            found = _sparse_direction(boundary, episode, best_map)
            if found is not None:  # lines 10-11: the smallest MAP so far
                best, best_map = (found[0], found[1], episode.mask()), found[2]
        self._trace_mask(ctx, best[2])
        ctx.trace.update({"scanned": scanned, "adversarial_starts": starts, "kept_frames": kept_counts})
        return best

    def _resume(self, ctx: AttackContext, boundary: Boundary) -> Start:
        """A redelivered job: Sign-OPT goes on from the checkpoint, masked by its perturbed pixels."""
        delta = (ctx.resume_from.astype(np.float32) - ctx.clean) / 255.0
        mask = np.any(delta != 0, axis=-1, keepdims=True).astype(np.float32)
        theta, norm = unit(delta)
        if norm == 0 or not boundary.adversarial(theta, norm):
            return None, INF, None
        self._trace_mask(ctx, mask)
        return theta, boundary.distance(theta, norm), mask

    @staticmethod
    def _trace_mask(ctx: AttackContext, mask: np.ndarray | None) -> None:
        ctx.trace.update({
            "key_frames": [] if mask is None else np.flatnonzero(mask.reshape(len(mask), -1).any(1)).tolist(),
            "mask_density": None if mask is None else round(float(mask.mean()), 4),
        })


def _brief(report: dict) -> dict:
    return {key: report[key] for key in ("iterations", "queries", "episodes", "stopped", "mean_reward")}


def _sparse_direction(boundary: Boundary, episode: Episode,
                      best_map: float) -> tuple[np.ndarray, float, float] | None:
    """Algorithm 2 lines 8-10 for an episode's mask M: (θ, g(θ), MAP) if it beats `best_map`, else None."""
    theta, norm = episode.direction()  # Eq. 13
    if norm == 0:
        return None
    limit = _lambda_below_map(boundary, theta, norm, best_map)
    if limit == 0:
        return None  # even the smallest step is above the best MAP
    g = boundary.distance(theta, norm, limit)
    if g == INF:
        return None
    distortion = boundary.map_at(theta, g)
    return (theta, g, distortion) if distortion < best_map else None


def _lambda_below_map(boundary: Boundary, theta: np.ndarray, high: float, best_map: float) -> float:
    """The largest λ ≤ high whose point has a MAP below `best_map` (inf: no pruning possible or needed).

    MAP(x + λθ) grows with λ, so if x + λθ is not adversarial there, g(θ) is beyond it and the
    candidate cannot beat the best MAP (Algorithm 2 line 10): `Boundary.distance` then stops after one
    query. Found by bisection on local computations only (no queries).
    """
    if math.isinf(best_map) or boundary.map_at(theta, high) < best_map:
        return INF
    low = 0.0
    for _ in range(20):
        middle = (low + high) / 2
        if boundary.map_at(theta, middle) < best_map:
            low = middle
        else:
            high = middle
    return low
