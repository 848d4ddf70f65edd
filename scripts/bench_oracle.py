"""Oracle throughput: an in-process forward vs the same model behind TorchServe over HTTP.

    .venv/bin/python scripts/bench_oracle.py [--model mini_c3d] [--batch-sizes 1 16 48] [--reps 5]

Both sides run the same fp16-stored weights in float32 on the CPU with 2 torch threads (TorchServe's
single worker on a 2-core machine), one after the other so they never compete for the cores. The
HTTP side uses model_server.client.OracleHTTP.predict, i.e. what the worker pays per query, and
starts TorchServe (and stops it after) when it is not already running.

The second table is what several jobs at once get: `--clients` threads each send `--rounds` requests
of n clips (one clip: a hard-label attack's query; 48: an NES population) at the same time, so
TorchServe merges them into batches; it prints the aggregate clips/s.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model_server import dataset, serve, zoo


def clips_per_second(
    run: Callable[[np.ndarray], object], clips: np.ndarray, reps: int, warmup: int, label: str
) -> float:
    """Median over `reps` timed calls of `run(clips)`, after `warmup` untimed ones."""
    for _ in range(warmup):
        run(clips)
    seconds = []
    for _ in tqdm(range(reps), desc=label, leave=False):
        start = time.perf_counter()
        run(clips)
        seconds.append(time.perf_counter() - start)
    return len(clips) / float(np.median(seconds))


def in_process(model: torch.nn.Module, chunk: int) -> Callable[[np.ndarray], object]:
    """The handler's computation without TorchServe: chunked forward, softmax, top-1."""

    @torch.inference_mode()
    def run(clips: np.ndarray) -> list[tuple[float, int]]:
        out = []
        for start in range(0, len(clips), chunk):
            probability, label = torch.softmax(
                model(zoo.to_model_input(clips[start : start + chunk])), 1
            ).max(1)
            out += zip(probability.tolist(), label.tolist(), strict=True)
        return out

    return run


def concurrent_clips_per_second(oracle, model: str, clips: np.ndarray, clients: int, rounds: int) -> float:
    """Aggregate rate of `clients` threads each sending `rounds` requests of `clips` at once."""
    def client(_: int) -> None:
        for _ in range(rounds):
            oracle.predict(model, clips)

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))  # warm-up
        start = time.perf_counter()
        list(pool.map(client, range(clients)))
        return clients * rounds * len(clips) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mini_c3d", choices=sorted(zoo.MODELS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 48])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients of the second table")
    parser.add_argument("--rounds", type=int, default=10, help="requests per client in the second table")
    args = parser.parse_args()

    torch.set_num_threads(2)
    biggest = max(args.batch_sizes)
    clips, _ = dataset.generate_split("test", n_per_class=-(-biggest // len(dataset.CLASS_NAMES)), seed=0)
    local = in_process(zoo.load_trained(args.model), chunk=48)
    started = serve.start(models=[args.model])
    oracle = serve.client()
    rows = []
    try:
        for n in args.batch_sizes:
            batch = clips[:n]
            local_rate = clips_per_second(local, batch, args.reps, args.warmup, f"in-process n={n}")
            http_rate = clips_per_second(
                lambda c: oracle.predict(args.model, c), batch, args.reps, args.warmup, f"http n={n}"
            )
            overhead_ms = 1000 * (n / http_rate - n / local_rate)
            ratio = http_rate / local_rate
            rows.append(f"| {n} | {local_rate:.1f} | {http_rate:.1f} | {ratio:.0%} | {overhead_ms:.1f} |")
        crowd = []
        for n in tqdm(args.batch_sizes, desc=f"{args.clients} concurrent clients", leave=False):
            rate = concurrent_clips_per_second(oracle, args.model, clips[:n], args.clients, args.rounds)
            crowd.append(f"| {args.clients} | {n} | {rate:.1f} |")
    finally:
        oracle.close()
        if started:
            serve.stop()

    cpu = platform.processor() or platform.machine()
    print(f"\n{args.model} on {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, 2 threads, ", end="")
    print(f"median of {args.reps} after {args.warmup} warm-up\n")
    print("| clips/request | in-process clips/s | TorchServe clips/s | ratio | overhead ms/request |")
    print("|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\n| concurrent clients | clips/request | TorchServe clips/s (all clients) |\n|---:|---:|---:|")
    print("\n".join(crowd))


if __name__ == "__main__":
    main()
