"""Attack benchmark: each attack/variant × each temporal zoo model on the model's attack set.

    .venv/bin/python scripts/bench_attacks.py run   [--models mini_c3d] [--attacks vbad astfocus:agents=none]
                                                  [--goal untargeted|targeted|both] [--per-class 1] [--jobs 2]
    .venv/bin/python scripts/bench_attacks.py table [--results var/bench/attacks.jsonl]

`run` is IN-PROCESS (worker/inprocess.py: the served fp16 weights and the handler's softmax top-1,
the oracle client's budget rules, one query held back for the final verification, no HTTP and no
audit log) so that the grid fits on a CPU; every finished attack appends one JSON line to the
results file and a rerun skips what is there. Budgets: 15 000 untargeted, 30 000 targeted; target =
the next class ((source + 1) mod 10). `table` prints the markdown table that BENCHMARKS.md holds:
fooling rate, queries (mean and median over successes, mean over all clips, as AstFocus Sec. 4.2
argues), MAP and sparsity over all clips, frames perturbed, and wall time per attack.

    .venv/bin/python scripts/bench_attacks.py probe --model mini_c3d --clip 12 --attack vbad --budget 1500
                                                  [--target 7]   (--clip sample: samples/sample_clip.npy)

`probe` runs one attack on one clip in process (1 torch thread) and prints its result.
An attack spec is `name` or `name:key=value,key=value` (values parsed as JSON when they can be).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm  # noqa: E402

DEFAULT_ATTACKS = [
    "vbad", "pbad", "srbad", "vbad:tentative=static", "vbad:tentative=random", "vbad:partition=random",
    "astfocus", "astfocus:agents=spatial", "astfocus:agents=temporal", "astfocus:agents=none",
    "astfocus:random_agents=true",
]
BUDGETS = {"untargeted": 15_000, "targeted": 30_000}
RESULTS = Path("var/bench/attacks.jsonl")


def parse_spec(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, _, raw = item.partition("=")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return name, params


def temporal_models() -> list[str]:
    from model_server import zoo

    return [name for name, e in zoo.MODELS.items() if e.dataset == "motion" and zoo.weights_path(name).exists()]


def _one(task: dict, threads: int) -> dict:
    import torch

    from model_server import attack_set
    from worker.inprocess import run_local

    torch.set_num_threads(threads)
    clips, labels = attack_set.clips(task["model"])
    clip, label = clips[task["index"]], int(labels[task["index"]])
    name, params = parse_spec(task["attack"])
    target = (label + 1) % 10 if task["goal"] == "targeted" else None
    result = run_local(name, params, task["model"], clip, BUDGETS[task["goal"]], target_label=target)
    return {**task, "label": label, "target": target, "success": result.success, "queries": result.queries,
            "seconds": round(result.seconds, 2), "map": result.metrics["map"],
            "sparsity": result.metrics["sparsity"], "frames_perturbed": result.metrics["frames_perturbed"],
            "linf": result.metrics["linf"], "iterations": result.trace.get("iterations")}


def run(args: argparse.Namespace) -> None:
    from model_server import attack_set

    args.results.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.results.exists():
        for line in args.results.read_text().splitlines():
            row = json.loads(line)
            done.add((row["model"], row["attack"], row["goal"], row["index"]))
    goals = ["untargeted", "targeted"] if args.goal == "both" else [args.goal]
    tasks = []
    for model in args.models or temporal_models():
        entries = attack_set.entries(model)
        chosen = [i for i in range(len(entries)) if i % 2 < args.per_class]
        for goal in goals:
            for attack in args.attacks:
                tasks += [{"model": model, "attack": attack, "goal": goal, "index": i} for i in chosen
                          if (model, attack, goal, i) not in done]
    print(f"{len(tasks)} attacks to run ({len(done)} already in {args.results})")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool, args.results.open("a") as out:
        futures = [pool.submit(_one, task, args.threads) for task in tasks]
        for future in tqdm(as_completed(futures), total=len(futures), desc="attacks"):
            out.write(json.dumps(future.result()) + "\n")
            out.flush()


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def table(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in args.results.read_text().splitlines()]
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["goal"], row["attack"]), []).append(row)
    print("| model | goal | attack | clips | FR | queries mean / median (successes) | queries mean (all) "
          "| MAP (all) | sparsity | frames perturbed | time / clip (s) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (model, goal, attack), items in sorted(groups.items()):
        wins = [r for r in items if r["success"]]
        won_queries = [r["queries"] for r in wins]
        median = statistics.median(won_queries) if won_queries else None
        print(f"| {model} | {goal} | `{attack}` | {len(items)} | {len(wins) / len(items):.0%} "
              f"| {_fmt(_mean(won_queries))} / {_fmt(median)} | {_fmt(_mean([r['queries'] for r in items]))} "
              f"| {_fmt(_mean([r['map'] for r in items]), 2)} | {_fmt(_mean([r['sparsity'] for r in items]), 2)} "
              f"| {_fmt(_mean([r['frames_perturbed'] for r in items]), 1)} "
              f"| {_fmt(_mean([r['seconds'] for r in items]), 1)} |")


def probe(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from model_server import attack_set
    from worker.inprocess import run_local

    torch.set_num_threads(1)
    if args.clip == "sample":
        clip = np.load(Path(__file__).resolve().parent.parent / "samples" / "sample_clip.npy")
    else:
        clip = attack_set.clips(args.model)[0][int(args.clip)]
    name, params = parse_spec(args.attack)
    result = run_local(name, params, args.model, clip, args.budget, target_label=args.target)
    print(json.dumps({"attack": args.attack, "clip": args.clip, "success": result.success,
                      "queries": result.queries, "map": round(result.metrics["map"], 2),
                      "linf": result.metrics["linf"], "best_score": round(result.history[-1][1], 3) if result.history else None,
                      "seconds": round(result.seconds, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    runner = sub.add_parser("run", help="run the grid in process, appending to the results file")
    runner.add_argument("--models", nargs="+")
    runner.add_argument("--attacks", nargs="+", default=DEFAULT_ATTACKS)
    runner.add_argument("--goal", choices=["untargeted", "targeted", "both"], default="both")
    runner.add_argument("--per-class", type=int, default=2, choices=[1, 2], help="attack-set clips per class")
    runner.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="attacks run in parallel")
    runner.add_argument("--threads", type=int, default=1, help="torch threads per job")
    runner.add_argument("--results", type=Path, default=RESULTS)
    shower = sub.add_parser("table", help="print the markdown table of a results file")
    shower.add_argument("--results", type=Path, default=RESULTS)
    prober = sub.add_parser("probe", help="one attack on one clip, in process")
    prober.add_argument("--model", default="mini_c3d")
    prober.add_argument("--clip", default="sample", help="attack-set index, or 'sample'")
    prober.add_argument("--attack", required=True)
    prober.add_argument("--budget", type=int, default=1500)
    prober.add_argument("--target", type=int)
    args = parser.parse_args()
    started = time.monotonic()
    {"run": run, "table": table, "probe": probe}[args.action](args)
    if args.action == "run":
        print(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
