"""AstFocus (Wei et al., 2023, "Efficient robustness assessment via adversarial spatial-temporal focus
on videos"). Paper: ../shared/papers/astfocus-wei-2023.txt

Two cooperative agents choose, at every PGD iteration, WHERE (one h×w patch per frame: the spatial
agent, Eq. 4-6) and WHEN (at most L key frames: the temporal agent, Eq. 12-13) to attack; NES (Eq. 2)
estimates the gradient on that focused sub-video only and PGD (Eq. 1) steps there. After the step the
agents are rewarded (Eq. 7-16) and updated by PPO with a centralised critic (Eq. 17-18), Algorithm 1.

What this implementation does where the paper is silent or cannot apply as written:

- Top-1 oracle, common reward (Eq. 9-10). Eq. 9 is V = exp(P(y'|X') − P(y|X')) with y' the runner-up
  (untargeted) or the target. A top-1 oracle never shows the runner-up, so V = exp(s) with s the goal
  score of attacks/base.Goal: untargeted s = −P(y|X') while y is top-1 (the runner-up term is dropped;
  the first other top-1 label ends the attack); targeted s = +P(target) while the target is top-1,
  −P(top-1) otherwise. Eq. 10 is then r_common = V(X'_{t+1}) / V(X'_t) − 1.
- Targeted attacks cannot follow P(target) from the clean clip under a top-1 oracle (it is not shown
  until the target is top-1), so a targeted AstFocus starts, like targeted NES+PGD and V-BAD, from an
  attacker-owned clip of the target class at a large ε and shrinks ε around the clean clip while the
  focused NES/PGD steps keep the target top-1 (Ilyas et al.'s partial-information scheme, k = 1, as
  V-BAD's Algorithm 1 writes it: a step that cannot shrink ε is tried at the current ε;
  attacks/shrinking_ball.py). The common reward then scores the last clip tried.
- EdgeBoxes reward (Eq. 7-8). OpenCV's EdgeBoxes (ximgproc) scores proposals, not given boxes; it runs
  once per clean frame on an edge map computed here (Canny-thinned Sobel magnitude, gradient
  orientation), and a candidate patch's objectness is max over proposals of score × IoU(proposal,
  patch). Eq. 8 sums over frames; here the mean over frames, so λ1 = 0.2 weighs it as the paper's
  per-frame scale suggests instead of growing with the frame count.
- Representative reward (Eq. 15) on L2-normalised pooled frame features (distances in [0, 2]).
- Frame features e_i (Eq. 4) come once from the clean clip (Algorithm 1, line 2) through the frozen
  ImageNet EfficientNet-Lite0 (stages 1-4, 80×7×7 at 112 px) in place of MobileNetV2.
- Temporal cap: Bernoulli draws above L keep the L most probable frames; none drawn keeps the most
  probable one. The PPO log-probability is that of the executed selection.
- PPO (Eq. 18): the state is fixed for a clip, so each iteration is a one-step episode. The centralised
  critic Q_k(s, a^p, a^f) (two heads) regresses each agent's reward; an agent's advantage is
  Q_k(s, a) − mean Q_k(s, a') over actions a' drawn from the current policies (a counterfactual
  baseline, as in COMA). The clipped objective (ε = 0.2) runs `ppo_epochs` steps per PGD iteration on
  the last `ppo_memory` iterations. The learning rate of Algorithm 1 is not given: 1e-3 (Adam).
- uint8 grid: the paper's NES variance 1e-3 (1e-6 targeted) rounds away on uint8 clips; σ is the
  per-pixel probe on [0, 1], 0.01 untargeted and 0.005 targeted. ε = 0.05 and α = 0.01 (not given).
- Ablations (Table 3, Fig. 9, Table 4): `agents` both / spatial / temporal / none (none = the PGD+NES
  baseline), `random_agents` (random patches and L random frames every iteration), and the reward
  switches `edgebox_reward`, `sparse_reward`, `representative_reward`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from worker.attacks.base import Attack, AttackContext
from worker.attacks.primitives import (
    antithetic_noise,
    in_levels,
    nes_gradient,
    offer_candidate,
    one_thread,
    probe_samples,
    project_linf,
    score_samples,
    to_levels,
)
from worker.attacks.shrinking_ball import ShrinkingBallParams, shrink_to_goal, start_in_target_class

Agents = Literal["both", "spatial", "temporal", "none"]


class AstFocusParams(ShrinkingBallParams):
    epsilon: float = Field(0.05, gt=0, le=1, description="L∞ bound on [0, 1].")
    learning_rate: float = Field(0.01, gt=0, le=0.5, description="PGD step α on [0, 1] (Eq. 1).")
    samples: int = Field(60, ge=2, le=480, description="NES samples n per estimate (Eq. 2; paper: 60).")
    sigma: float | None = Field(
        None, gt=0, le=0.5, description="NES probe per pixel on [0, 1]; default 0.01 untargeted, "
        "0.005 targeted."
    )
    agents: Agents = Field("both", description="Which agents focus the attack (Table 3); none = PGD+NES.")
    random_agents: bool = Field(
        False, description="Random patches and key frames instead of learned ones (Fig. 9)."
    )
    patch_size: int = Field(
        65, ge=8, le=112, description="Side h = w of the spatial agent's patch (paper: 65)."
    )
    candidates_per_side: int = Field(
        4, ge=1, le=16, description="Overlapping candidates per side (D = this²)."
    )
    max_key_frames: int = Field(10, ge=1, description="L: key frames at most (Eq. 14; paper: 10).")
    edgebox_reward: bool = Field(True, description="Add λ1·r_edgebox to the spatial reward (Eq. 11).")
    sparse_reward: bool = Field(True, description="Add λ2·r_sparse to the temporal reward (Eq. 16).")
    representative_reward: bool = Field(True, description="Add λ3·r_rep to the temporal reward (Eq. 16).")
    lambda1: float = Field(0.2, ge=0, description="λ1, edgebox weight (Eq. 11).")
    lambda2: float = Field(0.4, ge=0, description="λ2, sparse weight (Eq. 16).")
    lambda3: float = Field(0.6, ge=0, description="λ3, representative weight (Eq. 16).")
    policy_learning_rate: float = Field(
        1e-3, gt=0, le=1, description="Adam step of both agents and the critic."
    )
    ppo_clip: float = Field(0.2, gt=0, lt=1, description="PPO clipping ε.")
    ppo_epochs: int = Field(4, ge=1, le=50, description="PPO gradient steps per PGD iteration.")
    ppo_memory: int = Field(8, ge=1, le=256, description="Recent iterations each PPO update learns from.")
    max_iterations: int = Field(
        100_000, ge=1, description="PGD iterations T at most (the budget also stops it)."
    )

    def probe(self, targeted: bool) -> float:
        if self.sigma is not None:
            return self.sigma
        return 0.005 if targeted else 0.01


# --- candidate patches and objectness (Eq. 7-8) ------------------------------------------------------


def candidate_boxes(height: int, width: int, size: int, per_side: int) -> np.ndarray:
    """D = per_side² overlapping (x, y, w, h) patches covering the frame evenly (Fig. 2)."""
    size_y, size_x = min(size, height), min(size, width)
    ys = np.rint(np.linspace(0, height - size_y, per_side)).astype(int)
    xs = np.rint(np.linspace(0, width - size_x, per_side)).astype(int)
    return np.array([(x, y, size_x, size_y) for y in ys for x in xs], dtype=np.int32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y1 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    return inter / np.maximum(union, 1)


def edgebox_objectness(frames: np.ndarray, candidates: np.ndarray, proposals: int = 300) -> np.ndarray:
    """T×D objectness of every candidate patch in every frame from OpenCV EdgeBoxes."""
    import cv2

    detector = cv2.ximgproc.createEdgeBoxes(maxBoxes=proposals, minScore=0.0)
    scores = np.zeros((len(frames), len(candidates)), dtype=np.float32)
    for t, frame in enumerate(frames):
        gray = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255, (3, 3), 0)
        gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)
        magnitude = np.sqrt(gx * gx + gy * gy)
        edges = (magnitude / (magnitude.max() + 1e-6)) * (cv2.Canny(frame, 50, 150) > 0)
        orientation = np.mod(np.arctan2(gy, gx) + np.pi / 2, np.pi).astype(np.float32)
        boxes, box_scores = detector.getBoundingBoxes(edges.astype(np.float32), orientation)
        if len(boxes) == 0:
            continue
        box_scores = np.asarray(box_scores, dtype=np.float32).ravel()
        for d, candidate in enumerate(candidates):
            scores[t, d] = float(np.max(box_scores * _iou(candidate, np.asarray(boxes))))
    return scores


# --- rewards (Eq. 9-16) ------------------------------------------------------------------------------


def common_reward(score_before: float, score_after: float) -> float:
    """Eq. 10 with Eq. 9's V = exp(goal score): the relative change of V."""
    return float(np.exp(score_after - score_before) - 1.0)


def sparse_reward(selected: np.ndarray, limit: int) -> float:
    """Eq. 14: exp(−|Σ o_i − L| / M)."""
    return float(np.exp(-abs(int(selected.sum()) - limit) / len(selected)))


def representative_reward(features: np.ndarray, selected: np.ndarray) -> float:
    """Eq. 15: exp(−mean_i min_{t∈K} ‖e_i − e_t‖) on L2-normalised frame features."""
    if not selected.any():
        return 0.0
    distances = np.linalg.norm(features[:, None, :] - features[None, selected, :], axis=-1)
    return float(np.exp(-distances.min(axis=1).mean()))


# --- the agents (Eq. 4-6, 12-13) and the centralised critic (Eq. 18) ---------------------------------


def _networks():
    import torch
    from torch import nn

    class SpatialPolicy(nn.Module):
        """LSTM over frames; input concat(e_i, MLP(e_{i-1} on the previous patch)); D logits (Eq. 5)."""

        def __init__(self, channels: int, grid: int, candidates: int, hidden: int = 128, patch_dim: int = 32):
            super().__init__()
            self.frame = nn.Sequential(
                nn.Conv2d(channels, 16, 1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * grid * grid, hidden),
                nn.ReLU(),
            )
            self.patch = nn.Sequential(nn.Linear(channels, patch_dim), nn.ReLU())
            self.cell = nn.LSTMCell(hidden + patch_dim, hidden)
            self.head = nn.Linear(hidden, candidates)
            self.patch_dim, self.hidden = patch_dim, hidden

        def sample(self, maps: torch.Tensor, patch_features: torch.Tensor, draw) -> list[int]:
            """One patch per frame, in order: `draw(probabilities) -> index` (the attack's RNG)."""
            frames = self.frame(maps)
            h = c = maps.new_zeros(1, self.hidden)
            previous = maps.new_zeros(1, self.patch_dim)
            actions = []
            for i in range(len(maps)):
                h, c = self.cell(torch.cat([frames[i : i + 1], previous], dim=1), (h, c))
                actions.append(draw(torch.softmax(self.head(h)[0], dim=0).numpy()))
                previous = self.patch(patch_features[i, actions[-1]][None])  # e_{i-1}^{b*} for frame i+1
            return actions

        def log_prob(self, maps: torch.Tensor, patch_features: torch.Tensor,
                     actions: torch.Tensor) -> torch.Tensor:
            """Σ_i log π(b_i | s_i) of B replayed patch sequences (B×M indices) at once."""
            frames = self.frame(maps)
            batch, length = actions.shape
            h = c = maps.new_zeros(batch, self.hidden)
            previous = maps.new_zeros(batch, self.patch_dim)
            total = maps.new_zeros(batch)
            for i in range(length):
                h, c = self.cell(torch.cat([frames[i].expand(batch, -1), previous], dim=1), (h, c))
                log_probs = torch.log_softmax(self.head(h), dim=1)
                total = total + log_probs.gather(1, actions[:, i : i + 1])[:, 0]
                previous = self.patch(patch_features[i, actions[:, i]])
            return total

    class TemporalPolicy(nn.Module):
        """LSTM over frames on concat(e_i, e^g), e^g = FC(all e_i); p_i = P(o_i = 1) (Eq. 12)."""

        def __init__(self, channels: int, frames: int, hidden: int = 64, global_dim: int = 64):
            super().__init__()
            self.glob = nn.Sequential(nn.Linear(channels * frames, global_dim), nn.ReLU())
            self.lstm = nn.LSTM(channels + global_dim, hidden, batch_first=True)
            self.head = nn.Linear(hidden, 1)

        def forward(self, pooled: torch.Tensor) -> torch.Tensor:
            g = self.glob(pooled.reshape(1, -1)).expand(len(pooled), -1)
            out, _ = self.lstm(torch.cat([pooled, g], dim=1)[None])
            return torch.sigmoid(self.head(out[0])[:, 0]).clamp(1e-4, 1 - 1e-4)

    class CentralCritic(nn.Module):
        """Q_k(s, a^p, a^f) for k = spatial, temporal: global state plus both agents' actions."""

        def __init__(self, channels: int, frames: int, candidates: int, hidden: int = 128):
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(channels + frames * candidates + frames, hidden), nn.ReLU(), nn.Linear(hidden, 2)
            )
            self.frames, self.candidates = frames, candidates

        def forward(self, state: torch.Tensor, patches: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
            one_hot = torch.nn.functional.one_hot(patches, self.candidates).float().reshape(len(patches), -1)
            return self.net(torch.cat([state.expand(len(patches), -1), one_hot, selected.float()], dim=1))

    return SpatialPolicy, TemporalPolicy, CentralCritic


@functools.lru_cache(maxsize=2)
def _backbone(stages: int):
    from worker.surrogates import FrozenBackbone

    return FrozenBackbone(stages=stages)


@dataclass
class Focus:
    patches: list[int]  # candidate index per frame
    selected: np.ndarray  # bool per frame
    log_prob_spatial: float = 0.0
    log_prob_temporal: float = 0.0


@dataclass
class Transition:
    focus: Focus
    reward_spatial: float
    reward_temporal: float


class FocusAgents:
    """Both agents, the critic, their PPO updates and the ablation switches, for one clip."""

    def __init__(self, params: AstFocusParams, clean: np.ndarray, rng: np.random.Generator) -> None:
        import torch

        self.p, self.rng, self.torch = params, rng, torch
        frames, height, width, _ = clean.shape
        self.candidates = candidate_boxes(height, width, params.patch_size, params.candidates_per_side)
        self.limit = min(params.max_key_frames, frames)
        self.frames = frames
        self.memory: list[Transition] = []
        self.objectness = None
        if self.learned:  # random agents and the baseline need no features, rewards or networks
            self._observe(clean)
            self._build(frames, self.maps.shape[1], self.maps.shape[2])

    def _observe(self, clean: np.ndarray) -> None:
        """The agents' state: e_i once per clip (Eq. 4, Algorithm 1 line 2) and the patch objectness."""
        maps = _backbone(4).features(clean).float().cpu().clone()  # clone: leave inference mode
        self.maps, self.pooled = maps, maps.mean(dim=(2, 3))
        self.unit_features = self.torch.nn.functional.normalize(self.pooled, dim=1).numpy()
        self.patch_features = self._patch_features(maps, *clean.shape[1:3])
        if self.p.edgebox_reward and self.learns_spatial:
            self.objectness = edgebox_objectness(clean, self.candidates)

    # ------------------------------------------------------------------ which agents act, and how
    @property
    def learned(self) -> bool:
        return self.p.agents != "none" and not self.p.random_agents

    @property
    def learns_spatial(self) -> bool:
        return self.p.agents in ("both", "spatial")

    @property
    def learns_temporal(self) -> bool:
        return self.p.agents in ("both", "temporal")

    def _build(self, frames: int, channels: int, grid: int) -> None:
        torch = self.torch
        spatial_cls, temporal_cls, critic_cls = _networks()
        seed = int(self.rng.integers(2**31))
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # the agents' initial weights follow the job's seed
            self.spatial = spatial_cls(channels, grid, len(self.candidates))
            self.temporal = temporal_cls(channels, frames)
            self.critic = critic_cls(channels, frames, len(self.candidates))
        self.optimizer = torch.optim.Adam(
            [*self.spatial.parameters(), *self.temporal.parameters(), *self.critic.parameters()],
            lr=self.p.policy_learning_rate,
        )
        self.state = self.pooled.mean(dim=0, keepdim=True)

    def _patch_features(self, maps, height: int, width: int):
        """Per frame and candidate: the mean feature vector under the patch (T×D×C)."""
        grid_h, grid_w = maps.shape[2], maps.shape[3]
        rows = []
        for x, y, w, h in self.candidates:
            r0, r1 = int(y * grid_h // height), max(
                int(y * grid_h // height) + 1, int(np.ceil((y + h) * grid_h / height))
            )
            c0, c1 = int(x * grid_w // width), max(
                int(x * grid_w // width) + 1, int(np.ceil((x + w) * grid_w / width))
            )
            rows.append(maps[:, :, r0:r1, c0:c1].mean(dim=(2, 3)))
        return self.torch.stack(rows, dim=1)

    # ------------------------------------------------------------------ acting
    def act(self) -> Focus:
        """This iteration's focus: a patch per frame and the key frames (Algorithm 1, lines 4-5)."""
        with one_thread():
            return self._act()

    def _act(self) -> Focus:
        every_frame = np.ones(self.frames, dtype=bool)
        whole_frame = [-1] * self.frames
        if self.p.agents == "none":
            return Focus(whole_frame, every_frame)
        if self.p.random_agents:
            patches = self.rng.integers(len(self.candidates), size=self.frames).tolist()
            selected = np.zeros(self.frames, dtype=bool)
            selected[self.rng.choice(self.frames, self.limit, replace=False)] = True
            return Focus(
                patches if self.learns_spatial else whole_frame,
                selected if self.learns_temporal else every_frame,
            )
        torch = self.torch
        with torch.no_grad():
            patches = self.spatial.sample(self.maps, self.patch_features, self._draw)
            lp_spatial = self.spatial.log_prob(self.maps, self.patch_features, torch.tensor([patches]))[0]
            selected, lp_temporal = self._temporal(replay=None)
        return Focus(
            patches if self.learns_spatial else whole_frame,
            selected if self.learns_temporal else every_frame,
            float(lp_spatial), float(lp_temporal),
        )

    def _draw(self, probabilities: np.ndarray) -> int:
        """Categorical sampling (Eq. 6) from the attack's own RNG, so a seed replays the job."""
        return int(min(np.searchsorted(np.cumsum(probabilities), self.rng.random()), len(probabilities) - 1))

    def _temporal(self, replay: np.ndarray | None):
        """The selection (drawn by Eq. 13 and capped, or replayed: B×M) and its log-probability."""
        torch = self.torch
        probabilities = self.temporal(self.pooled)
        if replay is None:
            drawn = self.rng.random(self.frames) < probabilities.detach().numpy()
            selected = self._cap(drawn, probabilities.detach().numpy())
            chosen = torch.from_numpy(selected)[None]
        else:
            selected, chosen = replay, torch.from_numpy(replay)
        log_prob = torch.where(chosen, probabilities.log(), (1 - probabilities).log()).sum(dim=1)
        return selected, log_prob[0] if replay is None else log_prob

    def _cap(self, drawn: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """At most L key frames (the most probable ones), and at least one."""
        order = np.argsort(-probabilities, kind="stable")
        if drawn.sum() > self.limit:
            drawn = np.zeros_like(drawn)
            drawn[order[: self.limit]] = True
        if not drawn.any():
            drawn[order[0]] = True
        return drawn

    # ------------------------------------------------------------------ focus mask
    def mask(self, focus: Focus, shape: tuple[int, ...]) -> np.ndarray:
        """T×H×W×1 float mask of the focused sub-video (Algorithm 1, line 6)."""
        mask = np.zeros((*shape[:3], 1), dtype=np.float32)
        for t in np.flatnonzero(focus.selected):
            if focus.patches[t] < 0:
                mask[t] = 1.0
            else:
                x, y, w, h = self.candidates[focus.patches[t]]
                mask[t, y : y + h, x : x + w] = 1.0
        return mask

    # ------------------------------------------------------------------ rewards and PPO
    def rewards(self, focus: Focus, common: float) -> tuple[float, float]:
        """Eq. 11 and Eq. 16 with the enabled terms (nothing learns from them without agents)."""
        p = self.p
        if not self.learned:
            return common, common
        spatial = common
        if self.objectness is not None and focus.patches[0] >= 0:
            spatial += p.lambda1 * float(np.mean(self.objectness[np.arange(self.frames), focus.patches]))
        temporal = common
        if p.sparse_reward:
            temporal += p.lambda2 * sparse_reward(focus.selected, self.limit)
        if p.representative_reward:
            temporal += p.lambda3 * representative_reward(self.unit_features, focus.selected)
        return spatial, temporal

    def learn(self, focus: Focus, reward_spatial: float, reward_temporal: float) -> None:
        """Algorithm 1, lines 12-15: PPO on both agents with the centralised critic (Eq. 18)."""
        if not self.learned:
            return
        with one_thread():
            self._learn(focus, reward_spatial, reward_temporal)

    def _learn(self, focus: Focus, reward_spatial: float, reward_temporal: float) -> None:
        self.memory = [
            *self.memory[-(self.p.ppo_memory - 1):], Transition(focus, reward_spatial, reward_temporal)
        ]
        from worker.attacks.ppo import clipped_surrogate, ppo_update

        torch = self.torch
        memory = self.memory
        patches = torch.tensor([[max(i, 0) for i in item.focus.patches] for item in memory])
        selected = np.stack([item.focus.selected for item in memory])
        rewards = torch.tensor([[item.reward_spatial, item.reward_temporal] for item in memory])
        old_spatial = torch.tensor([item.focus.log_prob_spatial for item in memory])
        old_temporal = torch.tensor([item.focus.log_prob_temporal for item in memory])
        with torch.no_grad():  # advantages once per update, as PPO does: Q_k(s, a) − E_{a'~π} Q_k(s, a')
            counterfactual = [self._act() for _ in range(4)]
            baseline = torch.stack([self._q([c.patches], c.selected[None]) for c in counterfactual]).mean(0)
            advantage = self._q(patches.tolist(), selected) - baseline

        def loss() -> torch.Tensor:
            total = torch.nn.functional.mse_loss(self._q(patches.tolist(), selected), rewards)
            if self.learns_spatial:
                new = self.spatial.log_prob(self.maps, self.patch_features, patches)
                total = total + clipped_surrogate(new, old_spatial, advantage[:, 0], self.p.ppo_clip)
            if self.learns_temporal:
                _, new = self._temporal(replay=selected)
                total = total + clipped_surrogate(new, old_temporal, advantage[:, 1], self.p.ppo_clip)
            return total

        ppo_update(loss, self.optimizer, epochs=self.p.ppo_epochs)

    def _q(self, patches: list[list[int]], selected: np.ndarray):
        """The centralised critic on B joint actions: B×2 (spatial, temporal) values."""
        torch = self.torch
        indices = torch.tensor([[max(i, 0) for i in row] for row in patches])
        return self.critic(self.state, indices, torch.from_numpy(selected))


# --- the attack -------------------------------------------------------------------------------------


class AstFocus(Attack):
    name = "astfocus"
    description = (
        "AstFocus (Wei et al. 2023): a spatial and a temporal RL agent focus NES+PGD on key patches of "
        "key frames; both learn by PPO with a centralised critic during the attack."
    )
    Params = AstFocusParams
    params: AstFocusParams

    def run(self, ctx: AttackContext) -> None:
        agents = FocusAgents(self.params, ctx.clean, ctx.rng)
        self._candidates = agents.candidates
        ctx.trace.update(variant=self.name, agents=self.params.agents,
                         random_agents=self.params.random_agents, iterations=0, frames_selected=[],
                         patch_area=[])
        ctx.trace["surrogate"] = {"backbone": "efficientnet_lite0 stages 1-4 (frozen, ImageNet)",
                                  "shares_with_victim": _backbone_overlap(ctx.victim)}
        if ctx.goal.targeted:
            self._run_targeted(ctx, agents)
        else:
            self._run_untargeted(ctx, agents)

    # ------------------------------------------------------------------ one focused NES estimate
    def _focused_gradient(self, ctx: AttackContext, agents: FocusAgents, x: np.ndarray,
                          eps: int) -> tuple[np.ndarray | None, Focus]:
        """NES on the focused sub-video (Eq. 2), zero elsewhere, for the PGD step (Eq. 1); None = goal met."""
        p = self.params
        focus = agents.act()
        mask = agents.mask(focus, x.shape)
        self._trace_focus(ctx, focus, mask)
        sigma = p.probe(ctx.goal.targeted)
        noise = antithetic_noise(ctx.rng, x.shape, p.samples // 2, mask)  # only the focused sub-video
        samples = probe_samples(x, ctx.clean, eps, in_levels(sigma), noise)
        scored = score_samples(ctx, samples, stop_when_met=not ctx.goal.targeted)
        if scored is None:
            return None, focus
        return nes_gradient(scored.losses, noise, sigma), focus

    def _trace_focus(self, ctx: AttackContext, focus: Focus, mask: np.ndarray) -> None:
        ctx.trace["frames_selected"].append(int(focus.selected.sum()))
        ctx.trace["patch_area"].append(round(float(mask.mean()), 4))
        ctx.trace["last_focus"] = {
            "frames": np.flatnonzero(focus.selected).tolist(),
            "boxes": self._boxes(focus, mask.shape[1:3]),
        }

    def _boxes(self, focus: Focus, size: tuple[int, int]) -> list[list[int]]:
        """(x, y, w, h) of the focused region of every key frame."""
        boxes = []
        for t in np.flatnonzero(focus.selected):
            index = focus.patches[t]
            boxes.append([0, 0, size[1], size[0]] if index < 0 else self._candidates[index].tolist())
        return boxes

    # ------------------------------------------------------------------ untargeted (Algorithm 1)
    def _run_untargeted(self, ctx: AttackContext, agents: FocusAgents) -> None:
        p = self.params
        eps, lr = to_levels(p.epsilon), in_levels(p.learning_rate)
        x = ctx.clean if ctx.resume_from is None else ctx.resume_from
        score = ctx.tracker.best.score
        for iteration in range(1, p.max_iterations + 1):
            ctx.trace["iterations"] = iteration
            gradient, focus = self._focused_gradient(ctx, agents, x, eps)
            if gradient is None:
                return
            x = project_linf(x - lr * np.sign(gradient), ctx.clean, eps)
            success, new_score, _ = offer_candidate(ctx, x)
            if success:
                return
            agents.learn(focus, *agents.rewards(focus, common_reward(score, new_score)))
            score = new_score

    # ------------------------------------------------------------------ targeted (partial information)
    def _run_targeted(self, ctx: AttackContext, agents: FocusAgents) -> None:
        start = start_in_target_class(ctx, self.params, self.name)
        if start is None:
            return

        def learn(focus: Focus, score: float, new_score: float) -> None:
            agents.learn(focus, *agents.rewards(focus, common_reward(score, new_score)))  # Eq. 10

        shrink_to_goal(ctx, self.params, start,
                       lambda x, eps: self._focused_gradient(ctx, agents, x, eps), learn)


def _backbone_overlap(victim: str) -> str | None:
    from worker.surrogates import surrogate_overlap

    return surrogate_overlap(victim, ["efficientnet_lite0"])
