"""Where the attack grid's CPU time goes: one forward of each temporal zoo model, per clip.

    .venv/bin/python scripts/bench_forward.py [--models …] [--batch 48] [--threads 1] [--reps 3]

The grid runs one torch thread per attack, batches of up to 48 clips, fp32 (the served fp16 weights
loaded as the handler loads them), with freed memory kept for reuse (core/memory.py); the first
column is the same forward under glibc's default malloc, measured first because the setting cannot be
taken back in a process. Beside that, two speed-ups it does not use, with how far each moves
the oracle's answers (max |Δ top-1 probability| over the batch): a frozen TorchScript trace, and bf16
autocast. Last column: how far the same clips' answers move when forwarded 8 at a time instead of
48 at a time — why the handler forwards each request on its own.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.memory import keep_freed_memory
from model_server import attack_set, zoo


def timed(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
          reps: int) -> tuple[float, np.ndarray]:
    """(ms per clip, top-1 probabilities) of `forward` on `inputs`, after one warm-up call."""
    with torch.inference_mode():
        forward(inputs)
        started = time.perf_counter()
        for _ in range(reps):
            logits = forward(inputs)
    seconds = (time.perf_counter() - started) / reps
    return 1000 * seconds / len(inputs), torch.softmax(logits.float(), 1).max(1).values.double().numpy()


def bf16(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(inputs)
    return forward


def in_chunks(model: torch.nn.Module, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda inputs: torch.cat([model(inputs[i : i + size]) for i in range(0, len(inputs), size)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mini_c3d", "tsm", "c3d", "lrcn", "r2plus1d"])
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = {name: _load(name, args.batch) for name in args.models}
    glibc = {name: timed(model, inputs, args.reps) for name, (model, inputs) in
             tqdm(loaded.items(), desc="glibc defaults", leave=False)}
    resident_glibc = _resident_mb()
    if not keep_freed_memory():
        sys.exit("freed memory cannot be kept here (not glibc, or VAAS_MALLOC_KEEP_MB=0)")
    print(f"| model | fp32 ms/clip, glibc defaults (max Δp) | fp32 ms/clip "
          f"| TorchScript frozen ms/clip (max Δp) "
          f"| bf16 autocast ms/clip (max Δp) | max Δp, 8 vs {args.batch} per forward |\n"
          f"|---|---:|---:|---:|---:|---:|")
    for name, (model, inputs) in tqdm(loaded.items(), desc="models", leave=False):
        base_ms, base_p = timed(model, inputs, args.reps)
        glibc_ms, glibc_p = glibc[name]
        with torch.inference_mode():
            frozen = torch.jit.freeze(torch.jit.trace(model, inputs[:2]))
        rows = [timed(frozen, inputs, args.reps), timed(bf16(model), inputs, args.reps)]
        _, chunked_p = timed(in_chunks(model, 8), inputs, 1)
        cells = " | ".join(f"{ms:.1f} ({np.abs(p - base_p).max():.1e})" for ms, p in rows)
        print(f"| {name} | {glibc_ms:.1f} ({np.abs(glibc_p - base_p).max():.1e}) | {base_ms:.1f} | {cells} "
              f"| {np.abs(chunked_p - base_p).max():.1e} |")
    print(f"\nResident memory of this process (all models loaded): {resident_glibc:,} MB after the forwards "
          f"under glibc's defaults, {_resident_mb():,} MB after those with freed memory kept.")


def _resident_mb() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20


def _load(name: str, batch: int) -> tuple[torch.nn.Module, torch.Tensor]:
    model = zoo.load_trained(name).eval()
    clips, _ = attack_set.clips(name)
    return model, zoo.to_model_input(np.resize(clips, (batch, *clips.shape[1:])))


if __name__ == "__main__":
    main()
