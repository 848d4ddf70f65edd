"""Attack benchmark: each attack/variant × each temporal zoo model on the model's attack set.

    .venv/bin/python scripts/bench_attacks.py run   [--models mini_c3d] [--attacks vbad astfocus:agents=none]
                                                  [--goal untargeted|targeted|both] [--per-class 1] [--jobs 2]
    .venv/bin/python scripts/bench_attacks.py table [--results benchmarks/attacks.jsonl]
    .venv/bin/python scripts/bench_attacks.py plot  [--figure benchmarks/grid.png]
    .venv/bin/python scripts/bench_attacks.py clips > benchmarks/per_clip.md

`run --via service --url URL --key KEY` runs the same cells as campaigns through the real stack (one
campaign per model, goal and attack; rows carry `"via": "service"` and the table has a `via` column).
By default `run` is IN-PROCESS (worker/inprocess.py: the served fp16 weights and the handler's softmax top-1,
the oracle client's budget rules, one query held back for the final verification, no HTTP and no
audit log) so that the grid fits on a CPU; every finished attack appends one JSON line to the
results file and a rerun skips what is there. Budgets: 15 000 untargeted, 30 000 targeted; target =
the next class ((source + 1) mod 10). `table` prints the markdown table that BENCHMARKS.md holds:
fooling rate, queries (mean and median over successes, mean over all clips, as AstFocus Sec. 4.2
argues), MAP and sparsity over all clips, frames perturbed, and CPU time per attack; then RLSB's
pre-training, and the papers' comparisons (`CLAIMS`) counted clip by clip: on how many clips each held.

Hard-label attacks (`--attacks opt sign_opt heuristic heuristic:spatial=false`) are adversarial once
their scan finds a start, so their FR only says that; what the RLSB paper compares is how many queries
they need to bring the MAP within its bound (3 untargeted, 9 targeted): the `within bound` column, with
queries counted until that stop (or the budget). For score-based attacks that column is L∞ ≤ ε: a
targeted V-BAD / P-BAD / SR-BAD / AstFocus run starts from a target-class clip at ε = 1, so its final
clip is in the target class long before ε has come down to 0.05, and FR alone would overstate it.

    .venv/bin/python scripts/bench_attacks.py probe --model mini_c3d --clip 12 --attack vbad --budget 1500
                                                  [--target 7]   (--clip sample: samples/sample_clip.npy)

`probe` runs one attack on one clip in process (1 torch thread) and prints its result.
An attack spec is `name` or `name:key=value,key=value` (values parsed as JSON when they can be).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm

SCORE_ATTACKS = [
    "vbad", "pbad", "srbad",
    "astfocus", "astfocus:agents=spatial", "astfocus:agents=temporal", "astfocus:agents=none",
    "astfocus:random_agents=true",
]
# Hard-label attacks (issue 5) share the grid; they stop at the MAP bound (RLSB Sec. 4.3: 3 / 9).
DECISION_ATTACKS = ["opt", "sign_opt", "heuristic", "heuristic:spatial=false", "rlsb", "keyframe"]
# RLSB's policies, pre-trained once per (model, goal) with these budgets (about the paper's averages:
# 17 600 untargeted, 30 052 targeted, Sec. 4.3) and reported apart from the attacks' queries.
PRETRAIN_BUDGETS = {"untargeted": 18_000, "targeted": 30_000}
POLICIES = Path("benchmarks/policies")
DEFAULT_ATTACKS = SCORE_ATTACKS + DECISION_ATTACKS
# V-BAD's Table 2 ablations; not in the default grid (P-BAD and SR-BAD already cover static tentatives).
EXTRA_ATTACKS = ["vbad:tentative=static", "vbad:tentative=random", "vbad:partition=random"]
BUDGETS = {"untargeted": 15_000, "targeted": 30_000}
# Scalars of an attack's trace worth keeping with its row (why it stopped, where ε ended, …).
ROW_TRACE_KEYS = ("stopped", "epsilon_levels", "initial_queries", "spatial_stage", "spatial_dropped",
                  "key_frames", "alpha_levels", "decay_levels", "shrinks", "same_eps_kept", "same_eps_lost")
# Tracked in git: the grid takes days of CPU, so every session resumes where the last one stopped.
RESULTS = Path("benchmarks/attacks.jsonl")


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

    return [name for name, e in zoo.MODELS.items()
            if e.dataset == "motion" and zoo.weights_path(name).exists()]


def _one(task: dict, threads: int) -> dict:
    import torch

    from core.memory import keep_freed_memory
    from model_server import attack_set, zoo
    from worker.inprocess import run_local

    torch.set_num_threads(threads)
    memory_kept = keep_freed_memory()  # as the oracle does; recorded because it changes the time 1.8-3.9x
    clips, labels = attack_set.clips(task["model"])
    clip, label = clips[task["index"]], int(labels[task["index"]])
    name, params = parse_spec(task["attack"])
    target = (label + 1) % 10 if task["goal"] == "targeted" else None
    prepare = _policy_loader(task["model"], task["goal"]) if name == "rlsb" else None
    cpu_started = time.process_time()
    result = run_local(name, params, task["model"], clip, BUDGETS[task["goal"]], target_label=target,
                       prepare=prepare)
    # CPU seconds of this pool process (one torch thread): unlike wall time, they do not count the
    # minutes the grid sits paused (SIGSTOP) while tests run on the same two cores.
    cpu_seconds = time.process_time() - cpu_started
    return {**task, "via": "inprocess", "label": label, "target": target, "success": result.success,
            "label_met": result.label_met, "queries": result.queries,
            "seconds": round(result.seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
            "memory_kept": memory_kept, "kernels": zoo.kernels(), "map": result.metrics["map"],
            "sparsity": result.metrics["sparsity"], "frames_perturbed": result.metrics["frames_perturbed"],
            "linf": result.metrics["linf"], "iterations": result.trace.get("iterations"),
            "map_bound": result.trace.get("map_bound"),
            "within_map_bound": (result.success and result.metrics["map"] <= result.trace["map_bound"])
            if "map_bound" in result.trace else None,
            "trace": {k: result.trace[k] for k in ROW_TRACE_KEYS if k in result.trace}}


def _policy_path(model: str, goal: str) -> Path:
    return POLICIES / f"{model}-{goal}.pt"


def _policy_loader(model: str, goal: str):
    from worker.attacks.rlsb import load_policy

    def prepare(attack) -> None:
        attack.policy = load_policy(_policy_path(model, goal).read_bytes())
    return prepare


def pretrain_policy(model: str, goal: str, queries: int) -> tuple[str, str]:
    """Pre-train one RLSB policy in process (a pool task) and write it with its report."""
    import numpy as np
    import torch

    from model_server import dataset
    from worker.attacks.rlsb import PretrainParams, pretrain, save_policy
    from worker.inprocess import InProcessOracle

    torch.set_num_threads(1)
    path = _policy_path(model, goal)
    oracle = InProcessOracle(model, queries, held_back=0)
    started = time.monotonic()
    policy, report = pretrain(oracle, 16, goal, dataset.reference_clips, PretrainParams(),
                              np.random.default_rng([0, 0]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(save_policy(policy))
    report = {**report, "queries": oracle.used, "seconds": round(time.monotonic() - started, 1)}
    path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return model, goal


def run_via_service(tasks: list[dict], url: str, key: str, per_class: int) -> list[dict]:
    """The same grid as campaigns through the real stack (API → Celery → TorchServe), one campaign per
    (model, goal, attack) over that cell's clips; returns the rows the in-process runner would write."""
    import httpx

    rows = []
    cells: dict[tuple[str, str, str], list[int]] = {}
    for task in tasks:
        cells.setdefault((task["model"], task["goal"], task["attack"]), []).append(task["index"])
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=120) as http:
        for (model, goal, spec), indices in tqdm(cells.items(), desc="campaigns"):
            name, params = parse_spec(spec)
            body = {"model": model, "attacks": [{"name": name, "params": params}], "goal": goal,
                    "max_queries": BUDGETS[goal],
                    # the campaign's clips are the cell's: the same selection rule, cut after its last clip
                    "clips": {"set": "attack_set", "per_class": per_class,
                              "limit": max(indices) // 2 + 1 if per_class == 1 else max(indices) + 1}}
            if goal == "targeted":
                body["target_rule"] = {"kind": "next"}
            if name == "rlsb":
                _service_policy(http, model, goal)
            response = http.post("/campaigns", json=body)
            response.raise_for_status()
            campaign = _wait_campaign(http, response.json()["id"])
            for job in campaign["jobs"]:
                if job["clip_index"] in indices:
                    rows.append(_service_row(http.get(f"/jobs/{job['id']}").json(), model, goal, spec,
                                             campaign))
    return rows


def _service_policy(http, model: str, goal: str) -> None:
    if any(p["status"] == "succeeded"
           for p in http.get("/policies", params={"model": model, "goal": goal}).json()["items"]):
        return
    started = http.post("/policies",
                        json={"model": model, "goal": goal, "max_queries": PRETRAIN_BUDGETS[goal]})
    started.raise_for_status()
    while http.get(f"/policies/{started.json()['id']}").json()["status"] in ("queued", "running"):
        time.sleep(5)


def _wait_campaign(http, campaign_id: str) -> dict:
    with tqdm(desc=f"campaign {campaign_id[:8]}", leave=False) as bar:
        while True:
            campaign = http.get(f"/campaigns/{campaign_id}").json()
            bar.total = campaign["progress"]["jobs"]
            bar.n = campaign["progress"]["finished"]
            bar.refresh()
            if campaign["status"] == "finished":
                return campaign
            time.sleep(2)


def _service_row(job: dict, model: str, goal: str, spec: str, campaign: dict) -> dict:
    metrics, attack_report = job["metrics"] or {}, (job["metrics"] or {}).get("attack") or {}
    bound = attack_report.get("map_bound")
    success = job["status"] == "succeeded"
    return {"model": model, "attack": spec, "goal": goal, "index": job["clip_index"], "via": "service",
            "campaign": campaign["id"], "label": job["source_label"], "target": job["target_label"],
            "success": success, "label_met": metrics.get("label_met"),
            "queries": job["progress"]["queries_used"],
            "seconds": metrics.get("wall_time_s"), "kernels": metrics.get("oracle_kernels"),
            "map": metrics.get("map"), "sparsity": metrics.get("sparsity"),
            "frames_perturbed": metrics.get("frames_perturbed"), "linf": metrics.get("linf"),
            "iterations": attack_report.get("iterations"), "map_bound": bound,
            "within_map_bound": (success and metrics.get("map", 1e9) <= bound) if bound is not None else None}


def run(args: argparse.Namespace) -> None:
    from model_server import attack_set

    args.results.parent.mkdir(parents=True, exist_ok=True)
    done = {(row["model"], row["attack"], row["goal"], row["index"])
            for row in (load_rows(args.results) if args.results.exists() else [])}
    goals = ["untargeted", "targeted"] if args.goal == "both" else [args.goal]
    models = args.models or temporal_models()
    chosen = {m: [i for i in range(len(attack_set.entries(m))) if i % 2 < args.per_class] for m in models}
    # Breadth first: round r attacks the r-th chosen clip in every (goal, model, attack) cell, so a grid
    # cut short anywhere still covers every cell with the same clips.
    tasks = [{"model": model, "attack": attack, "goal": goal, "index": chosen[model][r]}
             for r in range(max(map(len, chosen.values())))
             for goal in goals for model in models if r < len(chosen[model]) for attack in args.attacks]
    tasks = [t for t in tasks if (t["model"], t["attack"], t["goal"], t["index"]) not in done]
    tasks = tasks[: args.limit or None]
    print(f"{len(tasks)} attacks to run ({len(done)} already in {args.results})")
    if args.via == "service":
        with args.results.open("a") as out:
            for row in run_via_service(tasks, args.url, args.key, args.per_class):
                out.write(json.dumps(row) + "\n")
        return
    _run_pool(tasks, args)


def _run_pool(tasks: list[dict], args: argparse.Namespace) -> None:
    """Run tasks in grid order, `jobs` at a time. An RLSB policy that is missing is pre-trained as a
    pool task of its own when its first attack comes up; that attack (and the next ones needing it)
    wait until it exists while the grid goes on."""
    queue, waiting, training = list(tasks), [], {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool, args.results.open("a") as out, \
            tqdm(total=len(tasks), desc="attacks") as bar:
        running: dict = {}
        while queue or running:
            while queue and len(running) < args.jobs:
                task = queue.pop(0)
                cell = (task["model"], task["goal"])
                if parse_spec(task["attack"])[0] == "rlsb" and not _policy_path(*cell).exists():
                    waiting.append(task)
                    if cell not in training:
                        training[cell] = pool.submit(pretrain_policy, *cell, args.pretrain_queries or
                                                     PRETRAIN_BUDGETS[task["goal"]])
                        running[training[cell]] = None
                    continue
                running[pool.submit(_one, task, args.threads)] = task
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                task = running.pop(future)
                if task is None:  # a policy is ready: its attacks go back to the front of the queue
                    ready = future.result()
                    queue[:0] = [t for t in waiting if (t["model"], t["goal"]) == ready]
                    waiting = [t for t in waiting if (t["model"], t["goal"]) != ready]
                    continue
                out.write(json.dumps(future.result()) + "\n")
                out.flush()
                bar.update()


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def progress(rows: list[dict], cells_per_clip: int) -> str:
    """How far a breadth-first grid got: runs per attack-set clip, each clip complete at
    `cells_per_clip` (attacks × models × goals)."""
    per_clip: dict[int, int] = {}
    for row in rows:
        per_clip[row["index"]] = per_clip.get(row["index"], 0) + 1
    parts = [f"clip {index}: {count} of {cells_per_clip}" + (" (complete)" if count >= cells_per_clip else "")
             for index, count in sorted(per_clip.items())]
    return f"{len(rows)} runs; " + "; ".join(parts)


def _cells_per_clip(rows: list[dict]) -> int:
    """Runs that complete one clip: every default attack on every model and goal the rows hold."""
    return len(DEFAULT_ATTACKS) * len({r["model"] for r in rows}) * len({r["goal"] for r in rows})


def load_rows(results: Path) -> list[dict]:
    return [json.loads(line) for line in results.read_text().splitlines()]


def table(args: argparse.Namespace) -> None:
    rows = load_rows(args.results)
    print(f"Progress: {progress(rows, _cells_per_clip(rows))}\n")
    groups: dict[tuple[str, str, str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault(
            (row["model"], row["goal"], row["attack"], row.get("via", "inprocess")), []
        ).append(row)
    print("| model | goal | attack | via | clips | FR² | within MAP bound³ "
          "| queries mean / median (successes) "
          "| queries mean (all) | MAP (all) | L∞ (all) | sparsity | frames perturbed | time / clip (s)¹ |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (model, goal, attack, via), items in sorted(groups.items()):
        wins = [r for r in items if r["success"]]
        won_queries = [r["queries"] for r in wins]
        median = statistics.median(won_queries) if won_queries else None
        bounded = [r["within_map_bound"] for r in items if r.get("within_map_bound") is not None]
        within = f"{sum(bounded) / len(bounded):.0%}" if bounded else "—"
        print(f"| {model} | {goal} | `{attack}` | {via} | {len(items)} | {len(wins) / len(items):.0%} "
              f"| {within} "
              f"| {_fmt(_mean(won_queries))} / {_fmt(median)} | {_fmt(_mean([r['queries'] for r in items]))} "
              f"| {_fmt(_mean([r['map'] for r in items]), 2)} | {_fmt(_mean([r['linf'] for r in items]), 0)} "
              f"| {_fmt(_mean([r['sparsity'] for r in items]), 2)} "
              f"| {_fmt(_mean([r['frames_perturbed'] for r in items]), 1)} "
              f"| {_time(items)} |")
    print("\n¹ CPU seconds of the run's process (one torch thread), averaged over the cell's runs made with "
          "freed memory kept (core/memory.py, from 2026-11-22); `‡` marks a mean over earlier runs only, "
          "made under glibc's default malloc, whose forwards were 1.8-3.9× slower "
          "(`scripts/bench_forward.py`); `w` a wall-clock mean, from rows recorded before CPU time was, "
          "which also counts any time the grid was paused.")
    print("\n² Runs that succeeded as a job does (worker/attacks/base.py `job_succeeded`): the oracle puts "
          "the final clip where the goal demands and the attack's own criterion holds; for a targeted "
          "score-based attack, which keeps the target from its ε = 1 start, that is ε shrunk to the goal ε "
          "(V-BAD Sec. 4.1).")
    print("\n³ Hard-label runs whose final clip also has MAP ≤ the bound ω (3 untargeted, 9 targeted; "
          "RLSB Sec. 4.3): they always end adversarial and report the MAP they reached.")
    _policy_table()
    _claims_table(rows)


def runs(args: argparse.Namespace) -> None:
    """Every run of one attack-set clip, one line each: the per-clip figures the findings quote."""
    rows = [r for r in load_rows(args.results) if r["index"] == args.clip
            and args.goal in (None, r["goal"]) and args.model in (None, r["model"])]
    print("| model | goal | attack | success² | within MAP bound³ | queries | MAP | L∞ | CPU s | stopped |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---|")
    for r in sorted(rows, key=lambda r: (r["model"], r["goal"], r["attack"])):
        bound = r.get("within_map_bound")
        stopped = _stop_reason(r) or "—"
        print(f"| {r['model']} | {r['goal']} | `{r['attack']}` | {'yes' if r['success'] else 'no'} "
              f"| {'—' if bound is None else ('yes' if bound else 'no')} | {r['queries']:,} "
              f"| {r['map']:.2f} | {r['linf']} | {_cpu(r):.0f} | {stopped} |")


def _stop_reason(row: dict) -> str | None:
    """The stop rule a hard-label run's trace recorded (None before the trace kept it)."""
    return (row.get("trace") or {}).get("stopped")


def stops(args: argparse.Namespace) -> None:
    """Why the hard-label runs that missed the MAP bound ended: the whole budget, or a recorded stop
    rule (with the share of the budget spent), or no record (rows from before the trace was kept)."""
    missed = [r for r in load_rows(args.results) if r.get("within_map_bound") is False]
    spent, unrecorded = [], []
    by_reason: dict[str, list[float]] = {}  # stop rule -> the shares of the budget those runs spent
    for r in missed:
        share, reason = r["queries"] / BUDGETS[r["goal"]], _stop_reason(r)
        if share >= 1:
            spent.append(r)
        elif reason is None:
            unrecorded.append(r)
        else:
            by_reason.setdefault(reason, []).append(share)
    print(f"hard-label runs that missed the MAP bound: {len(missed)}; spent the whole budget: {len(spent)}")
    for reason, shares in sorted(by_reason.items()):
        print(f"stopped: {reason}: {len(shares)}, after {min(shares):.0%}-{max(shares):.0%} of the budget, "
              f"{sum(share < 0.5 for share in shares)} under half")
    print(f"no stop reason recorded: {len(unrecorded)} (clips {sorted({r['index'] for r in unrecorded})})")


@dataclass(frozen=True)
class Family:
    """Attacks a paper ranks against each other on the same clip; `beside` are shown but not ranked."""

    title: str
    ranked: tuple[str, ...]
    beside: tuple[str, ...] = ()


FAMILIES = [
    Family("V-BAD and its variants (V-BAD Sec. 4.2, Tables 3-4)", ("vbad", "pbad", "srbad")),
    Family("AstFocus and its ablations (AstFocus Table 3, Fig. 9)",
           ("astfocus", "astfocus:agents=spatial", "astfocus:agents=temporal", "astfocus:agents=none",
            "astfocus:random_agents=true")),
    # Key-frame transfer has no MAP bound to meet, so it is not ranked against the query-based ones.
    Family("Hard-label (RLSB Table 1, Heuristic Table 6) and key-frame transfer",
           ("rlsb", "heuristic", "heuristic:spatial=false", "sign_opt", "opt"), ("keyframe",)),
]


def _spaced(value: int) -> str:
    """1 668 rather than 1,668, as BENCHMARKS' prose writes counts."""
    return f"{value:,}".replace(",", " ")


def _clip_cell(row: dict) -> str:
    """One run as the per-clip tables show it: queries · MAP where it met its criterion, else ✗ and how
    far it got (the ε a targeted score-based run reached, the MAP a hard-label one stopped at)."""
    reached = f"{_spaced(row['queries'])} · {row['map']:.2f}"
    if _met(row):
        return reached
    if row.get("within_map_bound") is not None or row["attack"] == "keyframe":
        return f"✗ {reached}" if row["success"] else "✗ not fooled"
    if row["goal"] == "targeted":
        return f"✗ ε {row['linf']}" if row.get("label_met", True) else "✗ lost the target"
    return f"✗ · {row['map']:.2f}"


def _firsts(runs: dict[str, dict]) -> set[str]:
    """The ranked attacks with the best standing on one clip; none where all of them tie without one
    meeting its criterion (every untargeted run that spent its budget stands alike)."""
    standings = {attack: _standing(row) for attack, row in runs.items()}
    best = min(standings.values())
    firsts = {attack for attack, standing in standings.items() if standing == best}
    return set() if best[0] > 0 and len(firsts) == len(runs) else firsts


def _lowest_maps(runs: dict[str, dict]) -> set[str]:
    """The ranked attacks with the lowest MAP among those that met their criterion, where two or more did."""
    met = {attack: row["map"] for attack, row in runs.items() if _met(row)}
    return {a for a, m in met.items() if m == min(met.values())} if len(met) > 1 else set()


def _family_table(family: Family, goal: str, rows: list[dict]) -> None:
    columns = family.ranked + family.beside
    by_clip: dict[tuple[str, int], dict[str, dict]] = {}
    for row in rows:
        if row["goal"] == goal and row["attack"] in columns:
            by_clip.setdefault((row["model"], row["index"]), {})[row["attack"]] = row
    tally = {attack: [0, 0, 0, 0, 0] for attack in columns}  # clips, met, first alone, tied, lowest MAP
    print(f"\n### {family.title}, {goal} (budget {_spaced(BUDGETS[goal])})\n")
    print("| model | clip | " + " | ".join(f"`{a}`" for a in columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for (model, index), clip_runs in sorted(by_clip.items()):
        firsts = _tally_clip(tally, family, clip_runs)
        cells = [("**" + _clip_cell(clip_runs[a]) + "**" if a in firsts else _clip_cell(clip_runs[a]))
                 if a in clip_runs else "" for a in columns]
        print(f"| {model} | {index} | " + " | ".join(cells) + " |")
    _print_tally(tally, family)


def _tally_clip(tally: dict[str, list[int]], family: Family, clip_runs: dict[str, dict]) -> set[str]:
    """Count one clip into the family's tally, if every ranked attack has run on it; its firsts."""
    ranked = {a: r for a, r in clip_runs.items() if a in family.ranked}
    if len(ranked) < len(family.ranked):
        return set()
    firsts, lowest = _firsts(ranked), _lowest_maps(ranked)
    for attack, row in clip_runs.items():
        counts = tally[attack]
        counts[0] += 1
        counts[1] += _met(row)
        counts[2] += firsts == {attack}
        counts[3] += attack in firsts and len(firsts) > 1
        counts[4] += attack in lowest
    return firsts


def _print_tally(tally: dict[str, list[int]], family: Family) -> None:
    print("\n| attack | clips | met its criterion | first alone | first, tied "
          "| lowest MAP of those that met it |")
    print("|---|---:|---:|---:|---:|---:|")
    for attack, (clips, met, alone, tied, lowest) in tally.items():
        ranks = (alone, tied, lowest) if attack in family.ranked else ("—",) * 3
        print(f"| `{attack}` | {clips} | {met} | " + " | ".join(map(str, ranks)) + " |")


def clips(args: argparse.Namespace) -> None:
    """Every clip of the grid, family by family: who came first and how far each got."""
    rows = [r for r in load_rows(args.results) if r.get("via", "inprocess") == args.via
            and (args.upto is None or r["index"] <= args.upto)]
    upto = "" if args.upto is None else f" --upto {args.upto}"
    print("# Attack grid, clip by clip\n")
    print(f"Written by `.venv/bin/python scripts/bench_attacks.py clips{upto} > benchmarks/per_clip.md` from "
          f"`{args.results}` ({progress(rows, _cells_per_clip(rows))}).\n")
    print("A cell is one run: `queries · MAP` where the run met its criterion (FR for score-based attacks: "
          "the goal at ε = 0.05; the MAP bound 3 / 9 for hard-label ones; fooled for key-frame transfer), "
          "else ✗ and how far it got: the ε (uint8 levels, goal 12) a targeted score-based run brought down, "
          "the queries · MAP a hard-label run stopped at. **Bold**: first on that clip, by the standing the "
          "claims table uses (met the criterion, then fewer queries; else nearer the goal); no bold where "
          "every ranked attack failed alike. Each family's tally follows its table and counts only the clips "
          "on which every ranked attack of the family has run.")
    for family in FAMILIES:
        for goal in ("untargeted", "targeted"):
            _family_table(family, goal, rows)


def _time(items: list[dict]) -> str:
    kept = [r["cpu_seconds"] for r in items if r.get("memory_kept")]
    if kept:
        return _fmt(_mean(kept), 1)
    if all(r.get("cpu_seconds") is not None for r in items):
        return _fmt(_mean([r["cpu_seconds"] for r in items]), 1) + " ‡"
    return _fmt(_mean([r["seconds"] for r in items]), 1) + " w"


def _policy_table() -> None:
    """RLSB's pre-training, reported apart from the attacks' queries (as the paper's Table 1 does)."""
    reports = sorted(POLICIES.glob("*.json"))
    if not reports:
        return
    print("\n| RLSB policy (model-goal) | pre-training queries | episodes | final mean reward | time (s) |")
    print("|---|---:|---:|---:|---:|")
    for path in reports:
        report = json.loads(path.read_text())
        rewards = report.get("mean_reward") or [None]
        print(f"| {path.stem} | {report['queries']:,} | {report.get('episodes', '—')} "
              f"| {_fmt(rewards[-1], 2)} | {_fmt(report.get('seconds'), 0)} |")


@dataclass(frozen=True)
class Claim:
    """One comparison a paper makes: `better` needs less than `worse` on the same clip."""

    better: str
    worse: str
    source: str
    goals: tuple[str, ...] = ("untargeted", "targeted")
    by_map: bool = False  # compare the MAP of clips both attacks fooled, not the standing


CLAIMS = [
    Claim("vbad", "pbad", "V-BAD Sec. 4.2, Tables 3-4"),
    Claim("vbad", "srbad", "V-BAD Sec. 4.2, Tables 3-4"),
    Claim("astfocus", "astfocus:agents=none", "AstFocus Table 3"),
    Claim("astfocus", "astfocus:agents=spatial", "AstFocus Table 3"),
    Claim("astfocus", "astfocus:agents=temporal", "AstFocus Table 3"),
    Claim("astfocus", "astfocus:random_agents=true", "AstFocus Fig. 9"),
    Claim("astfocus", "astfocus:agents=none", "AstFocus Table 3", by_map=True),
    Claim("astfocus", "astfocus:agents=spatial", "AstFocus Table 3", by_map=True),
    Claim("astfocus", "astfocus:agents=temporal", "AstFocus Table 3", by_map=True),
    Claim("heuristic", "opt", "Heuristic Table 6"),
    Claim("heuristic", "heuristic:spatial=false", "Heuristic Table 6"),
    Claim("heuristic:spatial=false", "opt", "Heuristic Table 6 (untargeted)", goals=("untargeted",)),
    Claim("rlsb", "sign_opt", "RLSB Table 1"),
    Claim("rlsb", "opt", "RLSB Table 1"),
    Claim("rlsb", "heuristic", "RLSB Table 1"),
    Claim("sign_opt", "opt", "RLSB Table 1"),
]


def _standing(row: dict) -> tuple[int, float]:
    """How far one run got, to compare two attacks on the same clip (smaller is better). A run that met
    its criterion (the MAP bound for hard-label attacks, the goal at ε for score-based ones) stands by
    its queries; one that did not by how far it got: the MAP a hard-label run reached, the ε a targeted
    score-based run brought down (an untargeted one that failed stays at ε, so two such runs tie)."""
    if not row["success"]:
        within = row.get("within_map_bound")
        return (2, 0.0) if within is not None else (1, row["linf"])
    if row.get("within_map_bound") is False:
        return (1, row["map"])
    return (0, row["queries"])


def _claim_counts(claim: Claim, pairs: list[tuple[dict, dict]]) -> tuple[int, int, int]:
    """Clips on which the claim held, tied and failed."""
    held = tied = failed = 0
    for better, worse in pairs:
        if claim.by_map:
            if not (better["success"] and worse["success"]):
                continue
            a, b = better["map"], worse["map"]
        else:
            a, b = _standing(better), _standing(worse)
        held, tied, failed = held + (a < b), tied + (a == b), failed + (a > b)
    return held, tied, failed


def sign_test(held: int, failed: int) -> float | None:
    """Two-sided exact sign test over the clips that did not tie: the chance of a split at least this
    uneven if either attack were as likely to win on each clip. None without such clips."""
    clips = held + failed
    if clips == 0:
        return None
    tail = sum(math.comb(clips, k) for k in range(min(held, failed) + 1)) / 2**clips
    return min(1.0, 2 * tail)


def _counts_cell(counts: tuple[int, int, int]) -> str:
    return "–".join(map(str, counts)) if any(counts) else "—"


def _claims_table(rows: list[dict]) -> None:
    """The papers' comparisons, clip by clip: a paired count that grows with every round of the grid."""
    runs = {(r.get("via", "inprocess"), r["model"], r["goal"], r["index"], r["attack"]): r for r in rows}
    models = sorted({r["model"] for r in rows})
    print("\n| the papers expect⁴ | source | goal | " + " | ".join(models) + " | all | p⁵ |")
    print("|---|---|---|" + "---:|" * (len(models) + 2))
    comparisons = 0
    for claim in CLAIMS:
        for goal in claim.goals:
            cells, total = [], (0, 0, 0)
            for model in models:
                pairs = [(run, runs[(via, m, g, i, claim.worse)]) for (via, m, g, i, a), run in runs.items()
                         if (m, g, a) == (model, goal, claim.better) and (via, m, g, i, claim.worse) in runs]
                counts = _claim_counts(claim, pairs)
                total = tuple(t + c for t, c in zip(total, counts, strict=True))
                cells.append(_counts_cell(counts))
            what = f"`{claim.better}` < `{claim.worse}`" + (" (MAP)" if claim.by_map else "")
            p = sign_test(total[0], total[2])
            comparisons += p is not None
            print(f"| {what} | {claim.source} | {goal} | " + " | ".join(cells)
                  + f" | {_counts_cell(total)} | {'—' if p is None else f'{p:.2g}'} |")
    print("\n⁴ Clips on which the claim held – tied – failed, comparing the two attacks' runs on the same "
          "clip: a run that met its criterion (FR², or the MAP bound³ for hard-label attacks) beats one that "
          "did not and otherwise stands by its queries; two that did not, by the MAP reached (hard-label) or "
          "the ε reached (targeted score-based; untargeted ones that failed tie). (MAP): the MAP of clips "
          "both fooled.")
    print(f"\n⁵ Two-sided exact sign test over all models' clips that did not tie: the chance of a split at "
          f"least this uneven if either attack were as likely to win on each clip. The table makes "
          f"{comparisons} such comparisons: if no attack were better than another, about "
          f"{comparisons / 20:.1f} would show p < 0.05 by chance; one run per "
          f"clip (seed 0), and a single run's queries move with its seed (`probe --seeds`).")


FIGURE = Path("benchmarks/grid.png")


def _cpu(row: dict) -> float:
    return row.get("cpu_seconds") or row["seconds"]  # rows from before CPU time was recorded: wall


def _print_spent_budget_costs(rows: list[dict]) -> None:
    """What a score-based run that spends its whole budget costs, per goal and allocator setting."""
    for goal in BUDGETS:
        for kept, allocator in ((True, "freed memory kept"), (False, "glibc's defaults")):
            spent = [_cpu(r) for r in rows if r["goal"] == goal and r["attack"] in SCORE_ATTACKS
                     and bool(r.get("memory_kept")) == kept and r["queries"] >= BUDGETS[goal]]
            if spent:
                print(f"{goal} score-based runs that spent the whole budget ({allocator}): {len(spent)}, "
                      f"{min(spent):.0f}-{max(spent):.0f} CPU s (mean {sum(spent) / len(spent):.0f})")


def cost(args: argparse.Namespace) -> None:
    """CPU-hours: round 0 as recorded, a round at today's speed (each cell's mean over its runs with
    freed memory kept, from any clip; its older runs where it has none), AstFocus's share of it, what a
    score-based run that spends its whole budget costs, and each clip's half of each goal as recorded."""
    rows = load_rows(args.results)
    cells: dict[tuple[str, str, str], list[dict]] = {}
    for row in rows:
        cells.setdefault((row["model"], row["goal"], row["attack"]), []).append(row)

    per_cell = {key: [_cpu(r) for r in ([r for r in group if r.get("memory_kept")] or group)]
                for key, group in cells.items()}
    mean = {key: sum(v) / len(v) for key, v in per_cell.items()}
    astfocus = [key for key in mean if key[2].startswith("astfocus")]
    ablations = [key for key in astfocus if key[1] == "targeted" and key[2] != "astfocus"]
    first = [r for r in rows if r["index"] == 0]
    print(f"round 0 as recorded: {sum(map(_cpu, first)) / 3600:.1f} CPU-hours "
          f"({sum(1 for r in first if r.get('memory_kept'))} of {len(first)} runs with freed memory kept)")
    print(f"a round at today's speed: {sum(mean.values()) / 3600:.1f} CPU-hours over {len(mean)} cells; "
          f"AstFocus {sum(mean[k] for k in astfocus) / 3600:.1f}, "
          f"its targeted ablations {sum(mean[k] for k in ablations) / 3600:.1f}")
    _print_spent_budget_costs(rows)
    recorded: dict[tuple[int, str], list[dict]] = {}
    for row in rows:
        recorded.setdefault((row["index"], row["goal"]), []).append(row)
    for (index, goal), group in sorted(recorded.items()):
        print(f"clip {index} {goal} as recorded: {sum(map(_cpu, group)) / 3600:.2f} CPU-hours over "
              f"{len(group)} runs")


def plot(args: argparse.Namespace) -> None:
    """Every run of the grid as one point, in four panels: score-based attacks by queries (untargeted)
    and by the ε they brought down (targeted), hard-label ones by queries against MAP with the bound."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load_rows(args.results)
    models = sorted({r["model"] for r in rows})
    colours = dict(zip(models, plt.get_cmap("tab10").colors, strict=False))
    figure, axes = plt.subplots(2, 2, figsize=(15, 10))
    for column, goal in enumerate(["untargeted", "targeted"]):
        score = [r for r in rows if r["goal"] == goal and r["attack"] in SCORE_ATTACKS]
        _plot_score_based(axes[0][column], score, goal, models, colours)
        hard = [r for r in rows if r["goal"] == goal and r["attack"] in DECISION_ATTACKS]
        _plot_hard_label(axes[1][column], hard, goal, colours)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[m], label=m) for m in models]
    figure.legend(handles=handles, loc="upper center", ncol=len(models), frameon=False)
    figure.text(0.5, 0.005,
                "filled: met its criterion (FR, or the MAP bound for hard-label); hollow: did not",
                ha="center", fontsize=9)
    figure.tight_layout(rect=(0, 0.02, 1, 0.96))
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.figure, dpi=80)
    print(f"wrote {args.figure} ({len(rows)} runs)")


def _met(row: dict) -> bool:
    return row["success"] if row.get("within_map_bound") is None else row["within_map_bound"]


def _plot_score_based(ax, rows: list[dict], goal: str, models: list[str], colours: dict) -> None:
    """x: the attack (models side by side), y: queries (untargeted) or the ε reached (targeted)."""
    targeted = goal == "targeted"
    for a, attack in enumerate(SCORE_ATTACKS):
        for m, model in enumerate(models):
            for row in (r for r in rows if (r["attack"], r["model"]) == (attack, model)):
                x = a + (m - (len(models) - 1) / 2) * 0.12
                ax.scatter(x, row["linf"] if targeted else row["queries"], s=30, color=colours[model],
                           facecolors=colours[model] if _met(row) else "none")
    ax.set_xticks(range(len(SCORE_ATTACKS)), [_short(a) for a in SCORE_ATTACKS], fontsize=8)
    if targeted:
        ax.axhline(12, color="grey", linestyle="--", linewidth=1)
        ax.set_ylabel("ε reached (uint8 levels; goal 12 = 0.05)")
    else:
        ax.set_yscale("log")
        ax.set_ylabel(f"queries (budget {BUDGETS[goal]:,})")
    ax.set_title(f"score-based, {goal} ({BUDGETS[goal]:,} queries)")


def _short(attack: str) -> str:
    """AstFocus variants by their agents, on two lines, so that eight labels fit under one panel."""
    if not attack.startswith("astfocus"):
        return attack
    agents = parse_spec(attack)[1]
    return "astfocus\n" + ("random" if agents.get("random_agents") else agents.get("agents", "both"))


def _plot_hard_label(ax, rows: list[dict], goal: str, colours: dict) -> None:
    """x: queries, y: the MAP the run ended at; the dashed line is the MAP bound (RLSB Sec. 4.3)."""
    markers = dict(zip(DECISION_ATTACKS, "osD^vP", strict=True))
    for row in rows:
        ax.scatter(max(row["queries"], 1), row["map"], s=40, marker=markers[row["attack"]],
                   color=colours[row["model"]], facecolors=colours[row["model"]] if _met(row) else "none")
    ax.axhline(9 if goal == "targeted" else 3, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("queries")
    ax.set_ylabel("MAP (uint8 levels)")
    ax.legend(handles=[ax.scatter([], [], marker=k, color="black", label=a) for a, k in markers.items()],
              fontsize=8, loc="best")
    ax.set_title(f"hard-label and transfer, {goal} (MAP bound {9 if goal == 'targeted' else 3})")


PROBE_TRACE_KEYS = ("iterations", "stopped", "initial_queries", "map_curve", "key_frames", "frames_kept",
                    "spatial_stage", "spatial_dropped", "epsilon_levels", "alpha_levels", "decay_levels",
                    "shrinks", "same_eps_kept", "same_eps_lost")


def probe(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from model_server import attack_set, zoo
    from worker.inprocess import run_local

    torch.set_num_threads(1)
    if args.clip == "sample":
        clip = np.load(Path(__file__).resolve().parent.parent / "samples" / "sample_clip.npy")
    else:
        clip = attack_set.clips(args.model)[0][int(args.clip)]
    name, params = parse_spec(args.attack)
    goal = "untargeted" if args.target is None else "targeted"
    prepare = _policy_loader(args.model, goal) if name == "rlsb" else None  # the grid's policy
    runs = []
    for seed in args.seeds or [params.get("seed", 0)]:
        result = run_local(name, {**params, "seed": seed}, args.model, clip, args.budget,
                           target_label=args.target, prepare=prepare)
        runs.append({"attack": args.attack, "clip": args.clip, "seed": seed, "success": result.success,
                     "queries": result.queries, "map": round(result.metrics["map"], 2),
                     "linf": result.metrics["linf"],
                     "best_score": round(result.history[-1][1], 3) if result.history else None,
                     "seconds": round(result.seconds, 1), "kernels": zoo.kernels(),
                     "trace": {k: v for k, v in result.trace.items() if k in PROBE_TRACE_KEYS}})
        print(json.dumps(runs[-1]), flush=True)
    if len(runs) > 1:
        print(json.dumps(seed_spread(runs)))


def seed_spread(runs: list[dict]) -> dict:
    """How far one cell's query count moves with the attack's seed alone: the grid runs seed 0 only."""
    queries = sorted(run["queries"] for run in runs)
    return {"attack": runs[0]["attack"], "clip": runs[0]["clip"], "seeds": len(runs),
            "successes": sum(run["success"] for run in runs), "queries_min": queries[0],
            "queries_median": statistics.median(queries), "queries_max": queries[-1],
            "queries_by_seed": {run["seed"]: run["queries"] for run in runs}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    runner = sub.add_parser("run", help="run the grid in process, appending to the results file")
    runner.add_argument("--models", nargs="+")
    runner.add_argument("--attacks", nargs="+", default=DEFAULT_ATTACKS,
                        help="attack specs (default: every attack and variant of issues 4 and 5)")
    runner.add_argument("--goal", choices=["untargeted", "targeted", "both"], default="both")
    runner.add_argument("--per-class", type=int, default=2, choices=[1, 2], help="attack-set clips per class")
    runner.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="attacks run in parallel")
    runner.add_argument("--threads", type=int, default=1, help="torch threads per job")
    runner.add_argument("--results", type=Path, default=RESULTS)
    runner.add_argument("--limit", type=int, default=0, help="run at most this many attacks (0: all)")
    runner.add_argument("--pretrain-queries", type=int, default=0,
                        help="RLSB pre-training budget (0: 18 000 untargeted / 30 000 targeted)")
    runner.add_argument("--via", choices=["inprocess", "service"], default="inprocess",
                        help="in process (fast) or as campaigns through the real stack (--url, --key)")
    runner.add_argument("--url", default=os.environ.get("VAAS_URL", "http://127.0.0.1:8000"))
    runner.add_argument("--key", default=os.environ.get("VAAS_API_KEY"))
    shower = sub.add_parser("table", help="print the markdown table of a results file")
    shower.add_argument("--results", type=Path, default=RESULTS)
    lister = sub.add_parser("runs", help="every run of one attack-set clip (the figures the findings quote)")
    lister.add_argument("--clip", type=int, required=True, help="attack-set index (round r is clip 2r)")
    lister.add_argument("--goal", choices=["untargeted", "targeted"])
    lister.add_argument("--model")
    lister.add_argument("--results", type=Path, default=RESULTS)
    clipper = sub.add_parser("clips", help="every clip, family by family: who came first and how far each "
                             "got (markdown: benchmarks/per_clip.md)")
    clipper.add_argument("--results", type=Path, default=RESULTS)
    clipper.add_argument("--via", choices=["inprocess", "service"], default="inprocess")
    clipper.add_argument("--upto", type=int, help="only attack-set clips up to this index (complete rounds)")
    stopper = sub.add_parser("stops", help="why the hard-label runs that missed the MAP bound ended")
    stopper.add_argument("--results", type=Path, default=RESULTS)
    coster = sub.add_parser("cost", help="CPU-hours of round 0, of a round at today's speed, of a "
                            "score-based run that spends its budget, and of each clip and goal as recorded")
    coster.add_argument("--results", type=Path, default=RESULTS)
    plotter = sub.add_parser("plot", help="draw every run of a results file (PNG)")
    plotter.add_argument("--results", type=Path, default=RESULTS)
    plotter.add_argument("--figure", type=Path, default=FIGURE)
    prober = sub.add_parser("probe", help="one attack on one clip, in process")
    prober.add_argument("--model", default="mini_c3d")
    prober.add_argument("--clip", default="sample", help="attack-set index, or 'sample'")
    prober.add_argument("--attack", required=True)
    prober.add_argument("--budget", type=int, default=1500)
    prober.add_argument("--target", type=int)
    prober.add_argument("--seeds", type=int, nargs="+",
                        help="run once per seed and print the spread (default: the spec's seed, else 0)")
    args = parser.parse_args()
    started = time.monotonic()
    {"run": run, "table": table, "runs": runs, "clips": clips, "stops": stops, "cost": cost,
     "plot": plot, "probe": probe}[args.action](args)
    if args.action == "run":
        print(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
