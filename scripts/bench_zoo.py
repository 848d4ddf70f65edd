"""Every served zoo model: size, test accuracy (from its card), clips/s in-process and via TorchServe.

    .venv/bin/python scripts/bench_zoo.py [--models …] [--batch-sizes 1 16 48] [--reps 3] [--warmup 1]

Prints a markdown table. The models are those `serve start` serves (every zoo model with weights)
unless --models says otherwise. In-process and HTTP runs alternate, never overlap, and use the same
fp16-stored weights in float32 with 2 torch threads; the in-process side is the handler's own
computation (chunked forward, softmax, top-1; scripts/bench_oracle.py). Clips are the model's own
kind of input: motion-dataset test clips, or the real-footage attack set for the ImageNet model.
TorchServe is started if it is not running (and stopped after).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model_server import archive, dataset, imagenet, serve, zoo
from scripts.bench_oracle import clips_per_second, in_process


def bench_clips(model: str, n: int) -> np.ndarray:
    if model == imagenet.NAME:
        clips = imagenet.attack_set_clips()[0]
    else:
        clips = dataset.generate_split("test", n_per_class=-(-n // len(dataset.CLASS_NAMES)), seed=0)[0]
    return np.resize(clips, (n, *clips.shape[1:]))


def accuracy_cell(card: dict) -> str:
    if card.get("accuracy") is not None:
        return f"{card['accuracy']:.1%} ({card.get('test_clips', '?')} test clips)"
    if card.get("dataset") == "imagenet-real-footage":
        return "n/a (ImageNet; published Lite0 top-1 75.1% at 224²)"
    return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(zoo.MODELS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 48])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-http", action="store_true", help="in-process only (no TorchServe)")
    args = parser.parse_args()

    torch.set_num_threads(2)
    models = args.models or archive.available()
    started = False if args.no_http else serve.start()
    oracle = None if args.no_http else serve.client()
    if oracle is not None:
        served = oracle.list_models()
        unserved = [m for m in models if m not in served]
        if unserved:
            print(f"skipping {unserved}: not served by the running TorchServe (restart it to add them)")
        models = [m for m in models if m in served]
    rows = []
    try:
        for model in models:
            card = zoo.load_card(model)
            local_model = zoo.load_trained(model)
            local = in_process(local_model, chunk=48)
            parameters = sum(p.numel() for p in local_model.parameters())
            local_rates, http_rates = [], []
            for n in args.batch_sizes:
                clips = bench_clips(model, n)
                local_rates.append(
                    clips_per_second(local, clips, args.reps, args.warmup, f"{model} in-process n={n}")
                )
                if oracle is not None:
                    http_rates.append(
                        clips_per_second(
                            lambda c, m=model: oracle.predict(m, c), clips, args.reps, args.warmup,
                            f"{model} http n={n}",
                        )
                    )
            del local_model, local
            cells = " | ".join(f"{r:.1f}" for r in local_rates)
            if http_rates:
                cells += " | " + " | ".join(f"{r:.1f}" for r in http_rates)
            rows.append(f"| {model} | {parameters / 1e6:.2f} M | {accuracy_cell(card)} | {cells} |")
            print(rows[-1], flush=True)
    finally:
        if oracle is not None:
            oracle.close()
        if started:
            serve.stop()

    sizes = args.batch_sizes
    header = ["model", "parameters", "test accuracy (card)"]
    header += [f"in-process n={n} clips/s" for n in sizes]
    if not args.no_http:
        header += [f"TorchServe n={n} clips/s" for n in sizes]
    cpu = platform.processor() or platform.machine()
    print(f"\n{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, 2 threads; ", end="")
    print(f"median of {args.reps} after {args.warmup} warm-up\n")
    print("| " + " | ".join(header) + " |")
    print("|---|---:|---|" + "---:|" * (len(header) - 3))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
