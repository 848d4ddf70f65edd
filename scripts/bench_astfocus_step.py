"""Where one AstFocus iteration's time goes, part by part, on one attack-set clip.

    .venv/bin/python scripts/bench_astfocus_step.py [--model mini_c3d] [--clip 0] [--reps 5] [--threads 1]

The parts are the calls `AstFocus._focused_gradient` and the untargeted loop make, with the attack's
defaults (n = 60 NES samples, both agents, ε = 0.05): the agents choosing a focus, the antithetic
noise drawn over the whole clip and masked to the focus (what the attack does), the 60 probes
projected into the ε ball, the oracle's forward of those 60 clips (in process, as the grid runs it),
the NES estimate, and the agents' rewards and PPO update (the PGD step's own query, one clip, is
left out). One row not part of the attack: the same noise drawn only inside the focus and scattered
into a zero clip, the cheaper draw it could make (it would change the random stream, and so every
AstFocus run's queries).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.memory import keep_freed_memory
from model_server import attack_set
from worker.attacks.astfocus import AstFocusParams, FocusAgents, common_reward
from worker.attacks.primitives import (
    antithetic_noise,
    in_levels,
    nes_gradient,
    probe_samples,
    to_levels,
)
from worker.inprocess import InProcessOracle

NOT_USED = "(not used) noise drawn inside the focus only"


def focus_only_noise(rng: np.random.Generator, mask: np.ndarray, channels: int, pairs: int) -> np.ndarray:
    """Antithetic noise with the focused pixels' values drawn and the rest left zero."""
    inside = np.broadcast_to(mask > 0, (*mask.shape[:3], channels))
    half = np.zeros((pairs, *inside.shape), dtype=np.float32)
    half[:, inside] = rng.standard_normal((pairs, int(inside.sum())), dtype=np.float32)
    return np.stack([half, -half], axis=1).reshape(2 * pairs, *inside.shape)


def one_iteration(agents: FocusAgents, oracle: InProcessOracle, clean: np.ndarray, rng: np.random.Generator,
                  params: AstFocusParams) -> tuple[dict[str, float], float]:
    """Seconds of each part of one untargeted iteration from the clean clip, and the focus's share."""
    eps, sigma, pairs = to_levels(params.epsilon), params.probe(targeted=False), params.samples // 2
    seconds: dict[str, float] = {}

    def timed(part: str, call: Callable[[], object]) -> object:
        started = time.perf_counter()
        result = call()
        seconds[part] = time.perf_counter() - started
        return result

    focus = timed("agents choose a focus", agents.act)
    mask = timed("focus mask", lambda: agents.mask(focus, clean.shape))
    noise = timed("noise over the whole clip, masked",
                  lambda: antithetic_noise(rng, clean.shape, pairs, mask))
    timed(NOT_USED, lambda: focus_only_noise(rng, mask, clean.shape[3], pairs))
    samples = timed("60 probes into the ε ball",
                    lambda: probe_samples(clean, clean, eps, in_levels(sigma), noise))
    answers = timed("oracle forward of the 60 probes", lambda: oracle.predict(samples))
    losses = np.array([-a["probability"] for a in answers], dtype=np.float32)
    timed("NES estimate", lambda: nes_gradient(losses, noise, sigma))
    common = common_reward(answers[0]["probability"], float(losses.min()))  # any score change will do
    timed("agents' rewards and PPO update", lambda: agents.learn(focus, *agents.rewards(focus, common)))
    return seconds, float(mask.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mini_c3d")
    parser.add_argument("--clip", type=int, default=0, help="attack-set index")
    parser.add_argument("--reps", type=int, default=5, help="iterations timed after one warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the grid runs 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    clean = attack_set.clips(args.model)[0][args.clip]
    params, rng = AstFocusParams(), np.random.default_rng(0)
    agents = FocusAgents(params, clean, rng)
    oracle = InProcessOracle(args.model, max_queries=10**9)
    one_iteration(agents, oracle, clean, rng, params)  # warm-up: first forwards and optimiser state
    timings, shares = zip(*(one_iteration(agents, oracle, clean, rng, params)
                            for _ in tqdm(range(args.reps), desc="iterations")), strict=True)
    share = statistics.mean(shares)
    medians = {part: statistics.median(t[part] for t in timings) for part in timings[0]}
    total = sum(v for part, v in medians.items() if part != NOT_USED)
    print(f"{args.model}, attack-set clip {args.clip}, {args.threads} torch thread(s), median of {args.reps} "
          f"iterations; the focus covered {100 * share:.1f} % of the clip on average\n")
    print("| part of one iteration | ms | share of the iteration |\n|---|---:|---:|")
    for part, value in medians.items():
        cell = "—" if part == NOT_USED else f"{100 * value / total:.1f} %"
        print(f"| {part} | {1000 * value:.1f} | {cell} |")
    print(f"| iteration (the attack's parts) | {1000 * total:.1f} | 100 % |")


if __name__ == "__main__":
    main()
