"""Gradient key-frame selection (Xu, Liu, Yin, Hu, Ding, "Sparse adversarial attack for video via
gradient-based keyframe selection"). Paper: ../shared/papers/keyframe-grad-xu.txt

The paper is WHITE-BOX. In this black-box service the white-box model is the attacker's own video
surrogate (worker/surrogates.VideoSurrogate: trained on attacker data, never the victim; it shares the
3D-conv family with mini_c3d/c3d/r2plus1d and no weights, worker/weights/video_surrogate.json). The
oracle is never asked for gradients: every query is a TRANSFER CHECK of one uint8 clip, counted by the
oracle client like any other query.

    1. Per-frame weights (Eq. 3-4): the gradient of the score of label y with respect to a feature map
       s of the surrogate, summed over the positions (i, j) of each frame; for a 3D feature map, whose
       time steps each contain several frames, a frame's weight is the mean over the feature maps that
       contain it (Eq. 4's (1/z) Σ_z).
    2. Key frames (Sec. 3.2): frames in descending order of weight until the weights' sum reaches the
       boundary b (0.3 untargeted, 0.4 targeted: the paper's grid search, Sec. 4.1); mask M.
    3. Perturbation (Eq. 1 untargeted, Eq. 2 targeted): argmin_δ α‖M·δ‖_{2,1} ∓ β L(·, F(x + M·δ)),
       with (α, β) = (0, 1) while the perturbed label is still the clean one (not yet the target) and
       (1, 0) once it is not (is the target): first fool, then shrink (Sec. 3.1).
    4. Transfer checks: when the iterate (a uint8 clip) fools the surrogate, it is sent to the oracle.
    5. Optionally (`finish_with="nes_pgd"`) a query-based NES + PGD restricted to the key frames (the
       key-frame mask seeds the temporal mask) continues from the best transferred clip.

What this implementation decides where the paper is silent or cannot apply as written:

- Which label, which layer. y is the victim's clean top-1 (the goal's source label, which the attack
  must move away from), also for targeted attacks: Eq. 3 names "the score of output label y"; the score
  is the pre-softmax logit, as in Grad-CAM [13]. s is the output of `feature_layer` (default "stem":
  the surrogate's first 3D feature map, after its 3×1×1 temporal convolution (z = 3), i.e. Eq. 4;
  "input" is the pixels themselves, Eq. 3 with s = x). Which frames each feature time step contains is
  measured once by autograd (the frames with a non-zero ∂s_t/∂x), so Eq. 4 holds for any architecture:
  the surrogate also feeds the frame difference x_t − x_{t−1}, so its "stem" step t holds the four
  frames t−2 … t+1, which the measurement finds and a hand-written z = 3 would miss.
- Signs and normalisation. Eq. 3's sum is signed and can be negative, while b ∈ (0, 1] compares with a
  sum of weights, so weights must be non-negative and sum to 1: importance_k = |w_k| / Σ|w|
  (`frame_weight="signed"`). `frame_weight="absolute"` sums |∂y/∂s| instead (no cancellation between
  positions). All-zero gradients give uniform weights. At least one frame is always selected.
- L2,1 norm (from SA [2]): Σ_frames ‖δ_frame‖_2 with δ on [0, 1] (the scale only matters when α and β
  are both non-zero, i.e. when `alpha_beta_*` are set to SA's constant weights).
- Optimiser (the paper names none): sign-gradient steps δ ← δ − η·sign(∇ Eq. 1/2) of whole uint8
  levels (η = `learning_rate`, 1/255 by default), so the iterate is always the uint8 clip a check
  would send ("quantize inside the loop"). Adam was tried first: once the CE saturates its
  second-moment memory shrinks the steps (a targeted surrogate margin crawled to ~7 logits in 200
  iterations), and on a continuous δ the surrogate could be fooled by an iterate whose rounding was
  not. Under sign steps the (1, 0) phase shrinks every perturbed pixel by η (the L2,1 norm's group
  structure survives only through the mask M). Iterations at most 500 untargeted / 1000 targeted
  (Sec. 4.1's maxima). δ starts at zero (from the checkpoint after a redelivery); x + M·δ stays in
  [0, 255]; `epsilon` optionally caps ‖δ‖∞ (the paper has no L∞ bound: the L2,1 term alone limits the
  perturbation).
- Transfer instead of white-box success. The paper's switching holds the iterate on the decision
  boundary of the model it differentiates: right for a white-box attack, useless for transfer. The
  switching test is therefore "surrogate logit margin > κ" (margin = best other logit − source logit
  untargeted, target logit − best other logit targeted); κ starts at `switch_margin` (0 = the paper's
  label test), or at the surrogate's margin on the clean clip when that is larger (the clean clip is
  known not to meet the goal, so a surrogate that already misclassifies it must be pushed past it),
  and grows by `margin_step` after every failed transfer check, so each failure pushes deeper into
  the surrogate's adversarial region; the (1, 0) phase shrinks δ whenever the margin exceeds κ.
  A check is sent when the iterate fools the surrogate with margin κ and `check_every` iterations
  have passed since the last check (a clip identical to the last failed one is not re-sent); the
  first transfer ends the attack (the tracker ranks results by success and then confidence, so
  shrinking further would not be kept). Each check is one counted query.
- Top-1 oracle. Untargeted success: top-1 ≠ source; targeted: top-1 == target (no targeted start from a
  target-class clip is needed: the surrogate gives a gradient towards the target from the clean clip).
  The NES finish minimises −score of attacks/base.Goal: untargeted p(source); targeted the confidence of
  the wrong top-1 (all a top-1 oracle shows until the target appears).
- NES finish: from the transferred clip with the best oracle score (the last white-box iterate when
  nothing was checked), projected into the L∞ ball `epsilon` (or `finish_epsilon` when `epsilon` is
  unset: 0.05, the service's NES+PGD ε) around the clean clip, antithetic NES with noise only on the
  key frames, sign steps with momentum (nes_pgd.py's untargeted loop, masked).
- Baselines of Sec. 4.2 (`selection`): "fixed" = SA's fixed key frames (evenly spaced here; SA's exact
  choice is not restated), "ifd" = the frames that differ most from their predecessor (inter-frame
  differencing). Both perturb `fixed_frames` frames: Table 2's SR of SA/IFD is 75% untargeted and 69%
  targeted of 16 frames, i.e. 4 and 5 perturbed frames (SR is evidently the share of UNperturbed
  frames: 82% for b = 0.3 cannot be the share perturbed). Other counts are scaled to the clip length.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from worker.attacks.base import Attack, AttackContext, AttackParams, Goal
from worker.attacks.nes_pgd import momentum_sign_pgd
from worker.attacks.primitives import (
    antithetic_noise,
    in_levels,
    nes_gradient,
    offer_candidate,
    probe_samples,
    project_linf,
    score_samples,
    to_levels,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

Selection = Literal["gradient", "fixed", "ifd"]
FrameWeight = Literal["signed", "absolute"]
Finish = Literal["none", "nes_pgd"]

# Zoo victims of the surrogate's family (3D convolutions); none shares its weights (its card says so).
_SAME_FAMILY = ("mini_c3d", "c3d", "r2plus1d")


class KeyframeParams(AttackParams):
    boundary: float | None = Field(
        None, gt=0, le=1,
        description="b (Sec. 3.2): key frames are added by weight until their weights sum to b; "
        "default 0.3 untargeted, 0.4 targeted (Sec. 4.1's grid search).",
    )
    selection: Selection = Field(
        "gradient", description="Key frames (Sec. 4.2): gradient weights (ours), fixed (SA) or ifd."
    )
    fixed_frames: int | None = Field(
        None, ge=1, description="fixed/ifd: frames perturbed; default 4 untargeted, 5 targeted of 16 "
        "(Table 2's SR of SA and IFD).",
    )
    feature_layer: str = Field(
        "stem", description="Surrogate module whose output is s in Eq. 3-4 ('input' = the pixels)."
    )
    frame_weight: FrameWeight = Field(
        "signed", description="Eq. 3's Σ_ij ∂y/∂s as written (signed, then |w|), or Σ_ij |∂y/∂s|."
    )
    alpha_beta_unfooled: tuple[float, float] = Field(
        (0.0, 1.0), description="(α, β) of Eq. 1-2 while the surrogate is not fooled (Sec. 3.1: (0, 1))."
    )
    alpha_beta_fooled: tuple[float, float] = Field(
        (1.0, 0.0), description="(α, β) once it is fooled (Sec. 3.1: (1, 0)); equal pairs = SA's constants."
    )
    switch_margin: float = Field(
        0.0, ge=0, description="κ: 'fooled' = surrogate logit margin > κ (0 = the paper's label test)."
    )
    margin_step: float = Field(
        1.0, ge=0, description="κ grows by this after every failed transfer check (logits)."
    )
    learning_rate: float = Field(
        1 / 255, gt=0, le=0.5,
        description="Sign-gradient step η on δ, on [0, 1], rounded to whole levels (≥ 1).",
    )
    max_iterations: int | None = Field(
        None, ge=1,
        description="White-box iterations at most; default 500 untargeted, 1000 targeted (Sec. 4.1).",
    )
    check_every: int = Field(
        1, ge=1, description="At least this many iterations between transfer checks (each check = 1 query)."
    )
    epsilon: float | None = Field(
        None, gt=0, le=1, description="Optional L∞ cap on δ on [0, 1] (the paper has none)."
    )
    finish_with: Finish = Field(
        "none", description="If no check transferred: nothing, or NES+PGD on the key frames only."
    )
    finish_epsilon: float = Field(0.05, gt=0, le=1, description="Finish: L∞ ball when `epsilon` is unset.")
    finish_sigma: float = Field(0.01, gt=0, le=0.5, description="Finish: NES search variance on [0, 1].")
    finish_population: int = Field(48, ge=2, le=480, description="Finish: NES samples per estimate.")
    finish_learning_rate: float = Field(0.01, gt=0, le=0.5, description="Finish: PGD sign-step on [0, 1].")
    finish_momentum: float = Field(0.9, ge=0, lt=1, description="Finish: momentum on the NES estimate.")
    finish_max_iterations: int = Field(10_000, ge=1, description="Finish: PGD iterations at most.")

    def resolved_boundary(self, targeted: bool) -> float:
        if self.boundary is not None:
            return self.boundary
        return 0.4 if targeted else 0.3

    def resolved_iterations(self, targeted: bool) -> int:
        if self.max_iterations is not None:
            return self.max_iterations
        return 1000 if targeted else 500

    def resolved_fixed_frames(self, targeted: bool, frames: int) -> int:
        count = self.fixed_frames
        if count is None:
            count = round((5 if targeted else 4) * frames / 16)  # Table 2: 4 or 5 of 16 frames
        return int(min(max(count, 1), frames))


# --- per-frame weights (Eq. 3-4) and key frames (Sec. 3.2) ------------------------------------------


def conv_containment(frames: int, window: int, stride: int = 1, padding: int = 0) -> np.ndarray:
    """T'×T: which input frames each output time step of a temporal convolution contains."""
    steps = (frames + 2 * padding - window) // stride + 1
    contains = np.zeros((steps, frames), dtype=bool)
    for t in range(steps):
        start = t * stride - padding
        contains[t, max(start, 0) : min(start + window, frames)] = True
    return contains


def frame_weights(per_step: np.ndarray, contains: np.ndarray) -> np.ndarray:
    """Eq. 4: w_k = mean over the feature time steps that contain frame k of Σ_ij ∂y/∂s (per step).

    With one time step per frame (`contains` the identity) this is Eq. 3. A frame no step contains
    (e.g. cut by a stride) gets weight 0.
    """
    counts = contains.sum(axis=0)
    sums = contains.T.astype(np.float64) @ np.asarray(per_step, dtype=np.float64)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def importance(weights: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1, as b ∈ (0, 1] needs: |w_k| / Σ|w| (uniform if all zero)."""
    magnitude = np.abs(np.asarray(weights, dtype=np.float64))
    total = magnitude.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(len(magnitude), 1.0 / len(magnitude))
    return magnitude / total


def select_key_frames(weights: np.ndarray, boundary: float) -> np.ndarray:
    """Sec. 3.2: frames in descending weight until the selected weights sum to b (at least one frame).

    Ties keep the earlier frame first (stable sort), so the selection is deterministic.
    """
    share = importance(weights)
    order = np.argsort(-share, kind="stable")
    reached = np.cumsum(share[order]) >= boundary - 1e-9
    count = int(np.argmax(reached)) + 1 if reached.any() else len(share)
    selected = np.zeros(len(share), dtype=bool)
    selected[order[:count]] = True
    return selected


def fixed_key_frames(frames: int, count: int) -> np.ndarray:
    """SA's fixed key frames (Sec. 4.2 baseline): `count` frames evenly spaced over the clip."""
    selected = np.zeros(frames, dtype=bool)
    selected[np.unique(np.rint(np.linspace(0, frames - 1, count)).astype(int))] = True
    return selected


def interframe_differences(clip: np.ndarray) -> np.ndarray:
    """Mean |x_k − x_{k−1}| per frame (IFD, Sec. 4.2); frame 0 takes its successor's difference."""
    diffs = np.abs(np.diff(clip.astype(np.float32), axis=0)).reshape(len(clip) - 1, -1).mean(axis=1)
    return np.concatenate([diffs[:1], diffs]) if len(diffs) else np.zeros(len(clip))


def ifd_key_frames(clip: np.ndarray, count: int) -> np.ndarray:
    """The `count` frames that differ most from the preceding frame (ties: earlier frame)."""
    order = np.argsort(-interframe_differences(clip), kind="stable")
    selected = np.zeros(len(clip), dtype=bool)
    selected[order[:count]] = True
    return selected


# --- the loss of Eq. 1-2 and its switching (Sec. 3.1) ------------------------------------------------


def l21_norm(delta: torch.Tensor) -> torch.Tensor:
    """‖δ‖_{2,1} of a N×3×T×H×W perturbation: Σ over frames of each frame's L2 norm (SA [2])."""
    per_frame = delta.transpose(1, 2).flatten(2).square().sum(dim=2)  # N×T
    return (per_frame + 1e-12).sqrt().sum()  # the tiny term keeps the gradient finite at δ = 0


def goal_margin(logits: torch.Tensor, goal: Goal) -> torch.Tensor:
    """How far the surrogate is past the goal's boundary (> 0: fooled), per clip of N×K logits.

    Untargeted: best other logit − source logit; targeted: target logit − best other logit.
    """
    label = goal.target_label if goal.targeted else goal.source_label
    own = logits[:, label]
    others = logits.clone()
    others[:, label] = float("-inf")
    best_other = others.max(dim=1).values
    return own - best_other if goal.targeted else best_other - own


def adversarial_loss(logits: torch.Tensor, goal: Goal) -> torch.Tensor:
    """The ∓L term of Eq. 1 / Eq. 2: −CE(y, F(x+Mδ)) untargeted, +CE(ŷ, F(x+Mδ)) targeted."""
    import torch

    label = goal.target_label if goal.targeted else goal.source_label
    labels = torch.full((len(logits),), label, dtype=torch.long, device=logits.device)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    return ce if goal.targeted else -ce


def switch_weights(
    fooled: bool, unfooled_pair: tuple[float, float], fooled_pair: tuple[float, float]
) -> tuple[float, float]:
    """Sec. 3.1: (α, β) = (0, 1) while the perturbed label is the clean one (not the target), else (1, 0)."""
    return fooled_pair if fooled else unfooled_pair


def objective(
    delta: torch.Tensor, logits: torch.Tensor, goal: Goal, alpha: float, beta: float
) -> torch.Tensor:
    """Eq. 1 (untargeted) / Eq. 2 (targeted): α‖M·δ‖_{2,1} ∓ β L; `delta` already masked, on [0, 1]."""
    total = logits.new_zeros(())
    if alpha:
        total = total + alpha * l21_norm(delta)
    if beta:
        total = total + beta * adversarial_loss(logits, goal)
    return total


# --- the white-box surrogate --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def load_default_surrogate() -> nn.Module:
    """The attacker's VideoSurrogate (worker/surrogates.py), loaded once per process."""
    from worker.surrogates import load_video_surrogate

    return load_video_surrogate()


def surrogate_report(victim: str) -> dict:
    """What the trace says about the white-box model: whose it is and what it shares with the victim."""
    from worker.surrogates import VIDEO_CARD

    card = json.loads(VIDEO_CARD.read_text()) if VIDEO_CARD.exists() else {}
    return {
        "model": "video_surrogate",
        "owner": card.get("owner", "attacker (never served by the oracle)"),
        "card": "worker/weights/video_surrogate.json",
        "shares_with_victims": card.get("shares_with_victims"),
        "shares_with_victim": "the 3D-conv family, no weights" if victim in _SAME_FAMILY else None,
    }


def _device(model: nn.Module) -> torch.device:
    import torch

    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _to_input(clip: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8/float T×H×W×3 → float 1×3×T×H×W on 0–255 (what the surrogate and the zoo models take)."""
    import torch

    return torch.as_tensor(clip, device=device).float().permute(3, 0, 1, 2)[None].contiguous()


def _features_and_logits(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, logits) for one forward pass: s is `layer`'s output (or x itself for 'input')."""
    if layer == "input":
        return x, model(x)
    module = model.get_submodule(layer)
    captured: list = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return captured[0], logits


def measure_containment(model: nn.Module, layer: str, clip: np.ndarray) -> np.ndarray:
    """T'×T: which frames each time step of `layer`'s N×C×T'×h×w output contains (autograd, exact)."""
    import torch

    x = _to_input(clip, _device(model)).requires_grad_(True)
    features, _ = _features_and_logits(model, layer, x)
    rows = []
    for t in range(features.shape[2]):
        (grad,) = torch.autograd.grad(features[:, :, t].sum(), x, retain_graph=True)
        rows.append(grad.abs().sum(dim=(0, 1, 3, 4)).cpu().numpy() > 0)
    return np.stack(rows)


def surrogate_frame_weights(
    model: nn.Module, clip: np.ndarray, label: int, layer: str, kind: FrameWeight
) -> np.ndarray:
    """Eq. 3-4 on the surrogate: per-frame weights of `clip` for the score (logit) of `label`."""
    import torch

    x = _to_input(clip, _device(model)).requires_grad_(True)  # so the features join the graph
    features, logits = _features_and_logits(model, layer, x)
    (grad,) = torch.autograd.grad(logits[0, label], features)
    values = grad.abs() if kind == "absolute" else grad
    per_step = values.sum(dim=(0, 1, 3, 4)).double().cpu().numpy()  # Σ over channels and (i, j)
    if layer == "input":
        return per_step  # s = x: one time step per frame (Eq. 3)
    return frame_weights(per_step, measure_containment(model, layer, clip))


# --- the attack -------------------------------------------------------------------------------------


@dataclass
class _WhiteBoxState:
    """Bookkeeping of the surrogate optimisation for the trace and the finish."""

    margin: float
    runs: list[list[float]] = field(default_factory=list)  # run-length (α, β, iterations)
    best_checked: tuple[float, np.ndarray] | None = None  # (oracle score, clip)
    last_checked: np.ndarray | None = None
    last: np.ndarray | None = None

    def record_phase(self, alpha: float, beta: float) -> None:
        if self.runs and self.runs[-1][:2] == [alpha, beta]:
            self.runs[-1][2] += 1
        else:
            self.runs.append([alpha, beta, 1])


class KeyframeGrad(Attack):
    name = "keyframe"
    description = (
        "Gradient key-frame selection (Xu et al.): key frames by surrogate gradient weights (Eq. 3-4) up "
        "to boundary b, L2,1 + CE with switching (α, β) (Eq. 1-2) on the attacker's surrogate; the "
        "oracle only checks transfer; optional NES+PGD on the key frames."
    )
    Params = KeyframeParams
    params: KeyframeParams

    def __init__(self, params: KeyframeParams, surrogate_loader: Callable[[], nn.Module] | None = None,
                 surrogate_info: dict | None = None) -> None:
        super().__init__(params)
        # Overridable so logic tests can inject a tiny differentiable model; default: the attacker's.
        self.surrogate_loader = surrogate_loader or load_default_surrogate
        self.surrogate_info = surrogate_info

    def run(self, ctx: AttackContext) -> None:
        import torch

        model = self.surrogate_loader().eval().requires_grad_(False)  # gradients w.r.t. the input only
        with torch.enable_grad():
            mask, weights = self._key_frames(ctx, model)
            self._trace_setup(ctx, mask, weights)
            state = self._white_box(ctx, model, mask)
        if state is None or self.params.finish_with == "none":
            return
        start = state.best_checked[1] if state.best_checked is not None else state.last
        self._finish(ctx, start, mask)

    # ------------------------------------------------------------------ key frames (Sec. 3.2)
    def _key_frames(self, ctx: AttackContext, model: nn.Module) -> tuple[np.ndarray, np.ndarray | None]:
        p, targeted, frames = self.params, ctx.goal.targeted, len(ctx.clean)
        if p.selection == "fixed":
            return fixed_key_frames(frames, p.resolved_fixed_frames(targeted, frames)), None
        if p.selection == "ifd":
            return ifd_key_frames(ctx.clean, p.resolved_fixed_frames(targeted, frames)), None
        weights = surrogate_frame_weights(
            model, ctx.clean, ctx.goal.source_label, p.feature_layer, p.frame_weight
        )
        return select_key_frames(weights, p.resolved_boundary(targeted)), weights

    def _trace_setup(self, ctx: AttackContext, mask: np.ndarray, weights: np.ndarray | None) -> None:
        p = self.params
        ctx.trace.update(
            variant=self.name,
            surrogate=self.surrogate_info or surrogate_report(ctx.victim),
            selection=p.selection,
            boundary=p.resolved_boundary(ctx.goal.targeted) if p.selection == "gradient" else None,
            feature_layer=p.feature_layer,
            frame_weights=None if weights is None else [round(float(w), 6) for w in importance(weights)],
            key_frames=np.flatnonzero(mask).tolist(),
            sparse_rate=round(1 - float(mask.mean()), 4),  # the paper's SR: share of frames left clean
            iterations=0,
            transfer_checks=[],
            finish=None,
        )

    # ------------------------------------------------------------------ Eq. 1-2 on the surrogate
    def _white_box(self, ctx: AttackContext, model: nn.Module, mask: np.ndarray) -> _WhiteBoxState | None:
        """Sign-gradient steps on δ with the switching (α, β); None when a transfer check met the goal.

        δ lives on the uint8 grid (whole-level steps, integer ε cap, x kept in [0, 255]), so the
        iterate the surrogate judges is exactly the clip a transfer check sends.
        """
        import torch

        p, goal = self.params, ctx.goal
        device = _device(model)
        clean = _to_input(ctx.clean, device)
        keep = torch.as_tensor(mask, device=device, dtype=torch.float32).view(1, 1, -1, 1, 1)
        start = ctx.clean if ctx.resume_from is None else ctx.resume_from
        delta = (_to_input(start, device) - clean).mul_(keep).requires_grad_(True)  # whole levels
        step = float(max(1, round(in_levels(p.learning_rate))))
        cap = 255.0 if p.epsilon is None else float(to_levels(p.epsilon))
        state = _WhiteBoxState(margin=self._initial_margin(ctx, model, clean))
        last_check = -p.check_every
        for iteration in range(1, p.resolved_iterations(goal.targeted) + 1):
            ctx.trace["iterations"] = iteration
            x = clean + keep * delta
            logits = model(x)
            margin = float(goal_margin(logits.detach(), goal)[0])
            if margin > state.margin and iteration - last_check >= p.check_every:
                if self._transfer_check(ctx, x.detach(), margin, state, iteration):
                    return None
                last_check = iteration
            fooled = margin > state.margin  # against κ as raised by a failed check
            alpha, beta = switch_weights(fooled, p.alpha_beta_unfooled, p.alpha_beta_fooled)
            state.record_phase(alpha, beta)
            loss = objective(keep * delta / 255.0, logits, goal, alpha, beta)  # Eq. 1 / Eq. 2
            (gradient,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta -= step * gradient.sign()  # L∞ steepest descent: unaffected by CE saturating
                delta.clamp_(-cap, cap)
                delta.copy_(torch.minimum(torch.maximum(delta, -clean), 255 - clean))  # x stays in [0, 255]
        ctx.trace["alpha_beta_runs"] = state.runs[:100]
        state.last = self._quantize(ctx, (clean + keep * delta).detach())
        return state

    def _initial_margin(self, ctx: AttackContext, model: nn.Module, clean: torch.Tensor) -> float:
        """κ_0: `switch_margin`, or the surrogate's margin on the clean clip when that is larger.

        The clean clip is known not to meet the goal, so a surrogate that already misclassifies it
        must be pushed past its clean state before a check can tell anything.
        """
        import torch

        with torch.no_grad():
            clean_margin = float(goal_margin(model(clean), ctx.goal)[0])
        ctx.trace["surrogate_clean_margin"] = round(clean_margin, 4)
        return max(self.params.switch_margin, clean_margin)

    def _quantize(self, ctx: AttackContext, x: torch.Tensor) -> np.ndarray:
        """The uint8 clip the oracle sees (project_linf: rounded, clipped, inside the optional ε cap)."""
        eps = 255 if self.params.epsilon is None else to_levels(self.params.epsilon)
        clip = x[0].permute(1, 2, 3, 0).cpu().numpy()
        return project_linf(clip, ctx.clean, eps)

    def _transfer_check(self, ctx: AttackContext, x: torch.Tensor, surrogate_margin: float,
                        state: _WhiteBoxState, iteration: int) -> bool:
        """One counted query of the iterate (already on the uint8 grid); True when the goal is met.

        A failed check raises κ by `margin_step`. The same clip as the last failed check is not sent
        again (its answer is known) but still raises κ.
        """
        candidate = self._quantize(ctx, x)
        if state.last_checked is not None and np.array_equal(candidate, state.last_checked):
            state.margin += self.params.margin_step
            return False
        success, score, answer = offer_candidate(ctx, candidate)
        delta = candidate.astype(np.int16) - ctx.clean
        ctx.trace["transfer_checks"].append({
            "iteration": iteration, "required_margin": round(state.margin, 4),
            "surrogate_margin": round(surrogate_margin, 4), "label": int(answer["label"]),
            "probability": round(float(answer["probability"]), 6), "success": success,
            "linf": int(np.abs(delta).max()), "map": round(float(np.abs(delta).mean()), 4),
        })
        if success:
            ctx.trace["alpha_beta_runs"] = state.runs[:100]
            return True
        state.last_checked = candidate
        if state.best_checked is None or score > state.best_checked[0]:
            state.best_checked = (score, candidate)
        state.margin += self.params.margin_step  # push deeper into the surrogate's adversarial region
        return False

    # ------------------------------------------------------------------ NES + PGD on the key frames
    def _finish(self, ctx: AttackContext, start: np.ndarray, mask: np.ndarray) -> None:
        p = self.params
        eps = to_levels(p.epsilon if p.epsilon is not None else p.finish_epsilon)
        keep = mask.astype(np.float32)[:, None, None, None]  # the key-frame (temporal) mask
        x = project_linf(start.astype(np.float32), ctx.clean, eps)
        finish = ctx.trace["finish"] = {"method": "nes_pgd", "epsilon_levels": eps, "iterations": 0}
        momentum_sign_pgd(ctx, x, eps, lambda x: self._masked_estimate(ctx, x, eps, keep),
                          in_levels(p.finish_learning_rate), p.finish_momentum, p.finish_max_iterations,
                          finish, keep)

    def _masked_estimate(
        self, ctx: AttackContext, x: np.ndarray, eps: int, keep: np.ndarray
    ) -> tuple[np.ndarray, bool]:
        """Antithetic NES of ∇(−score), noise on the key frames only; `done` when a sample meets the goal."""
        p = self.params
        noise = antithetic_noise(ctx.rng, x.shape, p.finish_population // 2, keep)
        samples = probe_samples(x, ctx.clean, eps, in_levels(p.finish_sigma), noise)
        scored = score_samples(ctx, samples, stop_when_met=True)  # no ε to shrink: the label is the goal
        if scored is None:
            return np.zeros_like(noise[0]), True
        return nes_gradient(scored.losses, noise, p.finish_sigma), False
