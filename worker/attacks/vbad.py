"""V-BAD (Jiang, Ma, Chen, Bailey, Jiang, ACM MM 2019, "Black-box Adversarial Attacks on Video
Recognition Models"), with its baselines P-BAD and SR-BAD (Sec. 4.3).
Paper: ../shared/papers/vbad-jiang-mm2019.txt

One PGD step (Eq. 1-6):
    v = 0                                   (1)
    h = φ(x)        tentative perturbation  (2)  Eq. 7, or static / random (Sec. 3.3, Table 2)
    U = G(h)        partition into patches  (3)  uniform 8×8 per frame, random, or pixels (P-BAD)
    v̂ = ∇_v ℓ_adv(x + R(v, U))              (4)  NES over the M patch weights (Algorithm 2)
    ĝ = R(v̂, U)                             (5)
    x ← Π_ε(x − α·sign(ĝ))                  (6)
Untargeted: from the clean clip at a fixed ε. Targeted (Algorithm 1): from a clip of the target class
at ε = 1, shrinking ε by Δε while the target stays top-1.

What this implementation decides where the paper is silent or cannot apply as written:

- Top-1 oracle. Untargeted ℓ_adv = p(source) while the source is top-1 (any other top-1 label ends the
  attack: success). Targeted ℓ_adv = −p(target) while the target is top-1; a sample that loses the
  target gets the highest transformed loss (Algorithm 2's "punish", Sec. 3.4), ranked equal last.
- uint8 grid. Every sample is rounded to the uint8 clip the oracle sees. The paper normalises each
  patch to unit L2 norm and samples the weights with σ = 1e-3 (1e-6 targeted): on a 14×14×3 patch that
  moves each pixel by ~4e-5 of the range, 1% of one uint8 level, so every sample would round back to
  the same clip and the estimate would be empty. Here a patch's direction is the sign pattern itself
  (unit L∞ norm: R(v, U)_j = v_m(j)·h_j, which only rescales v and leaves sign(ĝ) unchanged) and
  σ is the per-pixel probe on [0, 1]: 0.01 (2.55 levels) untargeted, 0.005 targeted, where the small
  σ serves the paper's reason for its small targeted σ (keep the target top-1). σ_paper = σ·√|patch|.
- Tentative perturbations (Eq. 7) use the frames at the clip's own resolution (`image_size` 112, not
  the image models' 224: ~4-7× cheaper on a CPU), the output of MBConv stage `feature_layer` (5 by
  default; the paper names no layer), a fresh Bernoulli(½) mask b_n over the feature map every step,
  and for untargeted attacks the features of a fixed Gaussian-noise clip (mean 127.5, sd 64 levels)
  as r_n. The ensemble's perturbation is the sign of the members' mean sign ("average the
  perturbations extracted from the three image models", Sec. 4.1).
- Random partition (SR-BAD, Table 2) is drawn afresh every step, as "partitioning is applied in every
  step"; it has as many patches as the uniform one. P-BAD = static tentative + one patch per input
  dimension, i.e. NES on the pixels, population 96.
- Step sizes. Untargeted α = 0.01 (the paper's is "dynamically chosen", unspecified). Targeted: the
  paper halves α "if the ratio of failing to maintain the adversarial class is higher than 50%" and
  halves Δε "if we fail to reduce ε after 100 times". Here: α halves when more than half of the last
  `failure_window` same-ε tries of Algorithm 1 lost the target, and Δε halves after `decay_patience`
  consecutive failed ε reductions; both stop at one uint8 level. Initial Δε = 0.02 (unspecified). The
  loop is attacks/shrinking_ball.py, shared with the targeted AstFocus and NES+PGD.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
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
    probe_samples,
    project_linf,
    score_samples,
    to_levels,
)
from worker.attacks.shrinking_ball import ShrinkingBallParams, shrink_to_goal, start_in_target_class

ImageModel = Literal["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
Tentative = Literal["transferred", "static", "random"]
PartitionKind = Literal["uniform", "random", "pixel"]


class VbadParams(ShrinkingBallParams):
    epsilon: float = Field(0.05, gt=0, le=1, description="L∞ bound ε_adv on [0, 1] (paper: 0.05).")
    tentative: Tentative = Field(
        "transferred",
        description="Tentative perturbations φ (Sec. 3.3, Table 2): transferred from the image models "
        "(Eq. 7), static (all +1) or random (±1).",
    )
    image_models: list[ImageModel] = Field(
        default_factory=lambda: ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
        min_length=1,
        description="The attacker's ImageNet ensemble for Eq. 7 (one model = the paper's 'Single').",
    )
    feature_layer: int = Field(5, ge=1, le=7, description="MBConv stage whose output is f̃_l in Eq. 7.")
    image_size: int = Field(112, ge=32, le=320, description="Side the frames are resized to for Eq. 7.")
    mask_keep: float = Field(0.5, gt=0, le=1, description="P(b_n element = 1) of the random masks in Eq. 7.")
    partition: PartitionKind = Field(
        "uniform", description="Partitioning G (Sec. 3.4): uniform patches, random groups, or pixels (P-BAD)."
    )
    patches_per_side: int = Field(8, ge=1, le=56, description="Uniform: patches per frame side (8 → 8×8).")
    population: int = Field(48, ge=2, le=480, description="NES population λ (antithetic; P-BAD uses 96).")
    sigma: float | None = Field(
        None, gt=0, le=0.5, description="NES probe per pixel on [0, 1]; default 0.01 untargeted, "
        "0.005 targeted."
    )
    learning_rate: float = Field(0.01, gt=0, le=0.5, description="PGD step α on [0, 1].")
    max_iterations: int = Field(100_000, ge=1, description="PGD steps at most (the budget also stops it).")

    def probe(self, targeted: bool) -> float:
        if self.sigma is not None:
            return self.sigma
        return 0.005 if targeted else 0.01


# --- partitions (Eq. 3) and rectification (Eq. 5) ---------------------------------------------------


@dataclass(frozen=True)
class Partition:
    """Every input dimension's patch index (same shape as the clip) and the number of patches M."""

    index: np.ndarray
    count: int


def uniform_partition(shape: tuple[int, ...], per_side: int) -> Partition:
    """Each frame cut into per_side × per_side patches (all channels of a pixel in one patch)."""
    t, h, w, c = shape
    rows = np.minimum(np.arange(h) * per_side // h, per_side - 1)
    cols = np.minimum(np.arange(w) * per_side // w, per_side - 1)
    cell = rows[:, None] * per_side + cols[None, :]
    index = np.arange(t)[:, None, None] * per_side * per_side + cell[None]
    return Partition(np.repeat(index[..., None], c, axis=-1).astype(np.int32), t * per_side * per_side)


def random_partition(shape: tuple[int, ...], count: int, rng: np.random.Generator) -> Partition:
    """Input dimensions dealt at random into `count` equal groups (not spatially connected)."""
    size = int(np.prod(shape))
    index = (rng.permutation(size) % count).astype(np.int32)
    return Partition(index.reshape(shape), count)


def pixel_partition(shape: tuple[int, ...]) -> Partition:
    """Every input dimension its own patch (P-BAD: NES on the pixels)."""
    size = int(np.prod(shape))
    return Partition(np.arange(size, dtype=np.int32).reshape(shape), size)


def rectify(weights: np.ndarray, partition: Partition, tentative: np.ndarray) -> np.ndarray:
    """R(v, U) = Σ_m v_m u^(m), with u^(m) the tentative signs on patch m (unit L∞ norm)."""
    return weights[partition.index] * tentative


def transformed_losses(losses: np.ndarray, lost_target: np.ndarray) -> np.ndarray:
    """Algorithm 2's TransformedAdvLoss: centred ranks; samples that lost the target share the top rank."""
    n = len(losses)
    ranked = np.full(n, 0.5, dtype=np.float32)
    kept = np.flatnonzero(~lost_target)
    order = kept[np.argsort(losses[kept], kind="stable")]
    ranked[order] = np.arange(len(order), dtype=np.float32) / max(n - 1, 1) - 0.5
    return ranked


# --- tentative perturbations (Eq. 2, Eq. 7) ---------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _ensemble(names: tuple[str, ...], image_size: int):
    from worker.surrogates import ImageEnsemble

    return ImageEnsemble(names, image_size=image_size)


class TransferredTentative:
    """φ(x) = sign(∇_x (1/N) Σ_n ‖b_n ∘ f̃_l(x_n) − b_n ∘ r_n‖²), averaged over the ensemble (Eq. 7)."""

    def __init__(self, names: Sequence[str], image_size: int, layer: int, keep: float) -> None:
        self.ensemble = _ensemble(tuple(names), image_size)
        self.layer, self.keep = layer, keep
        self.targets: list = []

    def set_target_clip(self, clip: np.ndarray) -> None:
        """r_n: the per-frame features of `clip` (a target-class clip, or Gaussian noise)."""
        import torch

        with torch.no_grad():
            self.targets = [f.detach() for f in self.ensemble.features(clip, self.layer)]

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        import torch

        frames = torch.as_tensor(x, device=self.ensemble.device).permute(0, 3, 1, 2).float()
        signs = []
        for member, target in zip(self.ensemble.members, self.targets, strict=True):
            pixels = frames.clone().requires_grad_(True)
            features = member(pixels, self.layer)
            mask = torch.from_numpy(rng.random(tuple(features.shape), dtype=np.float32) < self.keep)
            mask = mask.to(features.device, features.dtype)
            distance = ((mask * (features - target)) ** 2).flatten(1).sum(1).mean()
            (gradient,) = torch.autograd.grad(distance, pixels)
            signs.append(torch.sign(gradient))
        mean_sign = torch.stack(signs).mean(0)
        return torch.sign(mean_sign).permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)


def gaussian_noise_clip(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """The untargeted r_n source: a Gaussian-noise clip on the uint8 range."""
    return np.clip(rng.normal(127.5, 64.0, size=shape), 0, 255).astype(np.uint8)


# --- the attack -------------------------------------------------------------------------------------


class Vbad(Attack):
    name = "vbad"
    description = (
        "V-BAD (Jiang et al. 2019): image-model tentative perturbations rectified per patch by NES, "
        "then PGD; targeted from a target-class clip with a shrinking ε (Algorithm 1)."
    )
    Params = VbadParams
    params: VbadParams

    def run(self, ctx: AttackContext) -> None:
        self._tentative = self._make_tentative()
        self._fixed_partition = self._make_fixed_partition(ctx.clean.shape)
        self._trace_setup(ctx)
        if ctx.goal.targeted:
            self._run_targeted(ctx)
        else:
            self._run_untargeted(ctx)

    # ------------------------------------------------------------------ setup
    def _make_tentative(self) -> TransferredTentative | None:
        p = self.params
        if p.tentative != "transferred":
            return None
        return TransferredTentative(p.image_models, p.image_size, p.feature_layer, p.mask_keep)

    def _trace_setup(self, ctx: AttackContext) -> None:
        p = self.params
        ctx.trace.update(
            variant=self.name,
            tentative=p.tentative,
            partition=p.partition,
            population=p.population,
            sigma=p.probe(ctx.goal.targeted),
            iterations=0,
        )
        if p.tentative == "transferred":
            from worker.surrogates import surrogate_overlap

            ctx.trace["surrogate"] = {"image_models": list(p.image_models),
                                      "shares_with_victim": surrogate_overlap(ctx.victim, p.image_models)}

    def _tentative_signs(self, ctx: AttackContext, x: np.ndarray) -> np.ndarray:
        if self._tentative is not None:
            return self._tentative(x, ctx.rng)
        if self.params.tentative == "random":
            return np.where(ctx.rng.random(x.shape) < 0.5, -1.0, 1.0).astype(np.float32)
        return np.ones(x.shape, dtype=np.float32)

    def _make_fixed_partition(self, shape: tuple[int, ...]) -> Partition | None:
        """Uniform and pixel partitions never change, so they are built once; random is redrawn."""
        p = self.params
        if p.partition == "pixel":
            return pixel_partition(shape)
        if p.partition == "uniform":
            return uniform_partition(shape, p.patches_per_side)
        return None

    def _partition(self, ctx: AttackContext, shape: tuple[int, ...]) -> Partition:
        if self._fixed_partition is not None:
            return self._fixed_partition
        per_side = self.params.patches_per_side
        return random_partition(shape, shape[0] * per_side * per_side, ctx.rng)

    # ------------------------------------------------------------------ Eq. 2-5 + Algorithm 2
    def _rectified_gradient(
        self, ctx: AttackContext, x: np.ndarray, eps: int
    ) -> tuple[np.ndarray | None, bool]:
        """ĝ = R(v̂, U) at x; (None, True) when a sample already met an untargeted goal."""
        p = self.params
        signs = self._tentative_signs(ctx, x)  # Eq. 2
        partition = self._partition(ctx, x.shape)  # Eq. 3
        sigma = p.probe(ctx.goal.targeted)
        deltas = antithetic_noise(ctx.rng, (partition.count,), p.population // 2)  # δ_k over patch weights
        directions = (rectify(d, partition, signs) for d in deltas)
        samples = probe_samples(x, ctx.clean, eps, in_levels(sigma), directions)
        scored = score_samples(ctx, samples, stop_when_met=not ctx.goal.targeted)
        if scored is None:
            return None, True
        lost = ~scored.met if ctx.goal.targeted else np.zeros_like(scored.met)
        # losses: untargeted p(source); targeted −p(target)
        weights = nes_gradient(transformed_losses(scored.losses, lost), deltas, sigma)  # Eq. 4
        return rectify(weights, partition, signs), False  # Eq. 5

    # ------------------------------------------------------------------ untargeted
    def _run_untargeted(self, ctx: AttackContext) -> None:
        p = self.params
        eps = to_levels(p.epsilon)
        if self._tentative is not None:
            self._tentative.set_target_clip(gaussian_noise_clip(ctx.clean.shape, ctx.rng))
        x = ctx.clean if ctx.resume_from is None else ctx.resume_from
        for iteration in range(1, p.max_iterations + 1):
            ctx.trace["iterations"] = iteration
            gradient, done = self._rectified_gradient(ctx, x, eps)
            if done:
                return
            x = project_linf(x - in_levels(p.learning_rate) * np.sign(gradient), ctx.clean, eps)  # Eq. 6
            if offer_candidate(ctx, x)[0]:
                return

    # ------------------------------------------------------------------ targeted (Algorithm 1)
    def _run_targeted(self, ctx: AttackContext) -> None:
        start = start_in_target_class(ctx, self.params, self.name)
        if start is None:
            return
        if self._tentative is not None:
            self._tentative.set_target_clip(start.clip)  # r_n = f̃_l(x'_n) of the target-class clip
        # Algorithm 1: each rectified estimate's step is tried at ε − Δε, else at ε
        shrink_to_goal(
            ctx, self.params, start, lambda x, eps: (self._rectified_gradient(ctx, x, eps)[0], None)
        )


class PbadParams(VbadParams):
    tentative: Tentative = Field("static", description="P-BAD: static tentative perturbations (all +1).")
    partition: PartitionKind = Field("pixel", description="P-BAD: every input dimension is its own patch.")
    population: int = Field(96, ge=2, le=480, description="NES population λ (paper: 96 for P-BAD).")


class SrbadParams(VbadParams):
    tentative: Tentative = Field("static", description="SR-BAD: static tentative perturbations (all +1).")
    partition: PartitionKind = Field("random", description="SR-BAD: random partitioning, redrawn every step.")


class Pbad(Vbad):
    name = "pbad"
    description = (
        "P-BAD (V-BAD Sec. 4.3): static tentative perturbations, one patch per pixel: NES on pixels."
    )
    Params = PbadParams


class Srbad(Vbad):
    name = "srbad"
    description = "SR-BAD (V-BAD Sec. 4.3): static tentative perturbations with random partitioning, NES."
    Params = SrbadParams
