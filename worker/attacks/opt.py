"""OPT (Cheng et al., ICLR 2019 [arXiv 2018], "Query-efficient hard-label black-box attack: an
optimization-based approach"), extended to video as the Heuristic (Wei et al. 2020) and RLSB (Wang et
al. 2021) papers do: their baseline, and the optimiser under the Heuristic attack.

Hard label: only whether the top-1 label meets the goal is used (the probability is ignored).
1. Initial direction: θ = (x̂ − x)/‖x̂ − x‖ for attacker-owned clips x̂ of other classes (targeted:
   of the target class), from the reference set (the zoo's TRAIN photographs). Each x̂ is queried once
   (a clip the victim does not put in the goal class is no direction), then g(θ) is searched; the
   smallest g wins (Heuristic Sec. "Methodology"; RLSB Eq. 13). Every scan query is counted.
2. Update (Heuristic Eq. 1-2): ĝ = (1/q) Σ (g(θ + βu) − g(θ))/β · u over q random unit u, then
   θ ← θ − η ĝ with η from Cheng et al.'s backtracking line search; if a sampled θ + βu beats the line
   search, it is taken instead. When η falls below 1e-4, η resets to 1 and β shrinks tenfold ("β …
   will reduce by 10 times if the estimated gradients can't provide useful information").
3. Stop when the best adversarial clip's MAP is within the bound (RLSB Sec. 4.3 for every method:
   MAP = 3 untargeted, 9 targeted), after T_ai = 1000 iterations, when β is exhausted, or when the
   budget ends (the best clip so far is kept; attacks/boundary.py).

Defaults: q = 20 (Heuristic, "following Cheng et al."), η0 = 0.2 (Cheng et al.), and β = 0.05, ten
times the papers' 0.005. Why: θ has unit norm over every pixel of the clip, so θ + βu moves a pixel by
about β × (the perturbation's RMS) — with β = 0.005 and a perturbation of ~10 levels RMS, 0.05 of a
level, which the uint8 rounding of every clip sent erases; g's finite differences were then noise and
the first line search failed on every try (a probe on mini_c3d's attack-set clip 12). At β = 0.05
the probes move pixels by about half a level: OPT then went from MAP 7.7 to 3.7 in 5 000 queries.
Choices the papers leave open: 10 initial clips (RLSB uses n = 100 for its own method); the
boundary search tolerance (attacks/boundary.py). Distances are on [0, 1] pixel values with unit-L2 θ.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydantic import Field

from worker.attacks.base import Attack, AttackContext, AttackParams
from worker.attacks.boundary import INF, Boundary, line_search, unit, unit_gaussian

MAP_BOUND = {False: 3.0, True: 9.0}  # RLSB Sec. 4.3, keyed by `targeted`


class DecisionParams(AttackParams):
    map_bound: float | None = Field(
        None, ge=0, le=255,
        description="Stop once the adversarial clip's MAP (0-255 scale) is within this bound; "
                    "None = the RLSB paper's 3 (untargeted) / 9 (targeted); 0 = never stop early.",
    )
    max_iterations: int = Field(1000, ge=1, description="Update iterations T_ai (RLSB Sec. 4.3: 1000).")
    initial_directions: int = Field(
        10, ge=1, le=1000, description="Attacker-owned clips scanned for a start."
    )
    learning_rate: float = Field(
        0.2, gt=0, le=10, description="Initial step η of the line search (Cheng et al.)."
    )
    tolerance: float = Field(
        1e-4, gt=0, lt=0.5, description="Relative width at which g(θ)'s binary search stops."
    )

    def bound(self, targeted: bool) -> float:
        return MAP_BOUND[targeted] if self.map_bound is None else self.map_bound


class OptParams(DecisionParams):
    beta: float = Field(0.05, gt=0, lt=1, description="Smoothing β of the finite difference (Eq. 1); "
                                                      "the paper's 0.005 rounds away on uint8 (module doc).")
    samples: int = Field(20, ge=1, le=200, description="Random directions q averaged per estimate (Eq. 1).")
    beta_min: float = Field(0.001, gt=0, lt=1, description="Stop when β has shrunk below this.")


def candidate_clips(ctx: AttackContext, n: int) -> Iterator[np.ndarray]:
    """Attacker-owned clips to start from: of the target class, or of every other class in turn."""
    from model_server.dataset import CLASS_NAMES

    if ctx.reference_clips is None:
        raise ValueError("decision-based attacks start from attacker-owned clips of other classes; "
                         f"this service has none for model '{ctx.victim}'")
    if ctx.goal.targeted:
        yield from ctx.reference_clips(ctx.goal.target_label, n)
        return
    others = [k for k in range(len(CLASS_NAMES)) if k != ctx.goal.source_label]
    per_class = -(-n // len(others))
    pools = {k: ctx.reference_clips(k, per_class) for k in others}
    for i in range(n):
        yield pools[others[i % len(others)]][i // len(others)]


def initial_direction(ctx: AttackContext, boundary: Boundary, n: int,
                      bound: float = 0.0) -> tuple[np.ndarray | None, float]:
    """The best start among n reference clips: (θ, g(θ)), or (None, inf) when none is adversarial.

    The scan ends early once a clip within the MAP `bound` is found (the attack's stop rule).
    """
    best_theta, best_g = None, INF
    if ctx.resume_from is not None:  # a redelivered job goes on from its checkpoint's direction
        theta, norm = unit((ctx.resume_from.astype(np.float32) - ctx.clean) / 255.0)
        if norm > 0 and boundary.adversarial(theta, norm):
            best_theta, best_g = theta, boundary.distance(theta, norm)
    for clip in candidate_clips(ctx, n):
        if boundary.best_map <= bound:
            break
        theta, norm = unit((clip.astype(np.float32) - ctx.clean) / 255.0)
        if norm == 0 or not boundary.adversarial_clips(clip[None])[0]:
            continue
        g = boundary.distance(theta, norm, best_g)
        if g < best_g:
            best_theta, best_g = theta, g
    return best_theta, best_g


class DecisionAttack(Attack):
    """The shared loop of OPT-family attacks: a start, then updates until a stop rule fires."""

    params: DecisionParams

    def run(self, ctx: AttackContext) -> None:
        boundary = Boundary(ctx, tolerance=self.params.tolerance)
        # the curve is the live list: a budget that ends mid-search still leaves it in the report
        ctx.trace.update({"kind": "decision", "map_bound": self.params.bound(ctx.goal.targeted),
                          "map_curve": boundary.curve})
        theta, g, mask = self.start(ctx, boundary)
        if theta is None:
            # a start's own queries (RLSB's fine-tuning episodes) may already have met the bound
            met = boundary.best_map <= self.params.bound(ctx.goal.targeted)
            ctx.trace["stopped"] = "map_bound" if met else "no adversarial starting direction"
            return
        self.optimise(ctx, boundary, theta, g, mask)

    def start(
        self, ctx: AttackContext, boundary: Boundary
    ) -> tuple[np.ndarray | None, float, np.ndarray | None]:
        theta, g = initial_direction(ctx, boundary, self.params.initial_directions,
                                     self.params.bound(ctx.goal.targeted))
        ctx.trace["initial_queries"] = boundary.queries
        return theta, g, None

    def optimise(self, ctx: AttackContext, boundary: Boundary, theta: np.ndarray, g: float,
                 mask: np.ndarray | None) -> None:
        bound = self.params.bound(ctx.goal.targeted)
        state = self.initial_state()
        for iteration in range(1, self.params.max_iterations + 1):
            ctx.trace.update({"iterations": iteration - 1, **state})
            if boundary.best_map <= bound:
                ctx.trace["stopped"] = "map_bound"
                return
            theta, g, more = self.update(boundary, theta, g, mask, state)
            if not more:
                ctx.trace["stopped"] = "step_size_exhausted"
                return
        ctx.trace.update({"iterations": self.params.max_iterations, "stopped": "max_iterations"})

    def initial_state(self) -> dict:
        return {"learning_rate": self.params.learning_rate, "beta": self.params.beta}  # type: ignore[attr-defined]

    def update(self, boundary: Boundary, theta: np.ndarray, g: float, mask: np.ndarray | None,
               state: dict) -> tuple[np.ndarray, float, bool]:
        raise NotImplementedError


def smoothing_left(state: dict, beta_min: float) -> bool:
    """Cheng et al.'s restart: when the line search collapses (η < 1e-4) the estimate gave no usable
    descent, so η resets to 1 and β shrinks tenfold; False once β falls below `beta_min`."""
    if state["learning_rate"] >= 1e-4:
        return True
    state["learning_rate"], state["beta"] = 1.0, state["beta"] * 0.1
    return state["beta"] >= beta_min


class Opt(DecisionAttack):
    name = "opt"
    description = "OPT (Cheng et al. 2018): zeroth-order descent on the boundary distance g(θ), hard label."
    Params = OptParams
    params: OptParams

    def update(self, boundary: Boundary, theta: np.ndarray, g: float, mask: np.ndarray | None,
               state: dict) -> tuple[np.ndarray, float, bool]:
        gradient, sampled_theta, sampled_g = self.estimate(boundary, theta, g, mask, state["beta"])
        moved_theta, moved_g, state["learning_rate"] = line_search(
            boundary, theta, g, gradient, state["learning_rate"], mask)
        theta, g = (moved_theta, moved_g) if moved_g <= sampled_g else (sampled_theta, sampled_g)
        return theta, g, smoothing_left(state, self.params.beta_min)

    def estimate(self, boundary: Boundary, theta: np.ndarray, g: float, mask: np.ndarray | None,
                 beta: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Eq. 1: ĝ = (1/q) Σ (g(θ+βu) − g(θ))/β · u; also the best sampled direction and its g."""
        gradient = np.zeros_like(theta)
        best_theta, best_g = theta, INF
        for _ in range(self.params.samples):
            u = unit_gaussian(boundary.ctx.rng, theta.shape, mask)
            probe = unit(theta + beta * u)[0]
            probe_g = boundary.local_distance(probe, g)
            if probe_g < INF:
                gradient += (probe_g - g) / beta * u
            if probe_g < best_g:
                best_theta, best_g = probe, probe_g
        return gradient / self.params.samples, best_theta, best_g
