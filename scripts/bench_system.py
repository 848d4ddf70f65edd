"""System benchmark: the whole stack (API → Redis → Celery → oracle client → TorchServe → Postgres).

    .venv/bin/python scripts/bench_system.py [--jobs 8] [--queries 600] [--pollers 100] [--poll-seconds 20]

1. Throughput with 1 and 2 Celery worker processes: `--jobs` NES+PGD jobs of `--queries` queries each
   on the bundled sample (p = 0.995: every job spends its whole budget), submitted at once; jobs/hour and
   queries/s from the first submission to the last job's end.
2. `GET /jobs/{id}` latency, p50 / p99, with `--pollers` concurrent pollers while such a batch runs.
3. Oracle over HTTP vs the same forward in process, batch 1 / 16 / 48, as a ratio (scripts/bench_oracle).
The audit log's cost per query is scripts/bench_audit.py's (BENCHMARKS.md). Uses the dev profile:
starts what is missing and stops what it started; the worker is restarted with each concurrency.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np
from tqdm import tqdm

from scripts import stack

PROFILE = stack.PROFILES["dev"]
URL = f"http://127.0.0.1:{PROFILE.api_port}"
SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "sample_clip.npy"
TERMINAL = {"succeeded", "budget_exhausted", "failed", "cancelled", "error"}


def submit_batch(client: httpx.Client, jobs: int, queries: int) -> list[str]:
    body = SAMPLE.read_bytes()
    ids = []
    for _ in range(jobs):
        response = client.post("/jobs", files={"video": ("sample.npy", body)},
                               data={"attack": "nes_pgd", "model": "mini_c3d", "max_queries": str(queries)})
        response.raise_for_status()
        ids.append(response.json()["id"])
    return ids


def wait_all(client: httpx.Client, ids: list[str]) -> list[dict]:
    pending, done = set(ids), {}
    with tqdm(total=len(ids), desc="jobs", leave=False) as bar:
        while pending:
            for job_id in list(pending):
                job = client.get(f"/jobs/{job_id}").json()
                if job["status"] in TERMINAL:
                    done[job_id] = job
                    pending.discard(job_id)
                    bar.update()
            time.sleep(0.5)
    return [done[i] for i in ids]


def throughput(client: httpx.Client, workers: int, jobs: int, queries: int) -> dict:
    stack.down("dev", ("worker",))
    stack.start_worker(PROFILE, stack.environment(PROFILE, announce=False), concurrency=workers)
    started = time.monotonic()
    finished = wait_all(client, submit_batch(client, jobs, queries))
    seconds = time.monotonic() - started
    spent = sum(job["progress"]["queries_used"] for job in finished)
    return {"workers": workers, "jobs": jobs, "seconds": round(seconds, 1),
            "jobs_per_hour": round(jobs / seconds * 3600), "queries_per_s": round(spent / seconds, 1),
            "statuses": sorted({job["status"] for job in finished})}


async def _poll(key: str, ids: list[str], pollers: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=pollers, max_keepalive_connections=pollers)
    async with httpx.AsyncClient(base_url=URL, headers={"X-API-Key": key}, limits=limits,
                                 timeout=60) as client:
        async def poller(n: int) -> None:
            nonlocal failures
            i = n
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    response = await client.get(f"/jobs/{ids[i % len(ids)]}")
                    response.raise_for_status()
                    latencies.append((time.perf_counter() - start) * 1000)
                except httpx.HTTPError:
                    failures += 1  # a timeout or an error status: counted, not timed
                i += 1
        await asyncio.gather(*(poller(n) for n in range(pollers)))
    return latencies, failures


def poll_latency(client: httpx.Client, key: str, pollers: int, seconds: float, queries: int) -> dict:
    ids = submit_batch(client, 4, queries * 4)  # jobs that keep the workers busy while we poll
    latencies, failures = asyncio.run(_poll(key, ids, pollers, seconds))
    for job_id in ids:
        client.delete(f"/jobs/{job_id}")
    cut = np.percentile(latencies, [50, 99])
    return {"pollers": pollers, "requests": len(latencies), "failed": failures,
            "requests_per_s": round(len(latencies) / seconds),
            "p50_ms": round(float(cut[0]), 1), "p99_ms": round(float(cut[1]), 1)}


def oracle_ratio(reps: int = 5) -> list[dict]:
    import torch

    from model_server import dataset, serve, zoo
    from scripts.bench_oracle import clips_per_second, in_process

    torch.set_num_threads(2)
    model = zoo.load_trained("mini_c3d")
    http = serve.client()
    all_clips, _ = dataset.generate_split("test", n_per_class=5, seed=0)
    rows = []
    for batch in (1, 16, 48):
        clips = all_clips[:batch]
        local = clips_per_second(in_process(model, 48), clips, reps, 2, f"in-process {batch}")
        served = clips_per_second(lambda c: http.predict("mini_c3d", c), clips, reps, 2, f"HTTP {batch}")
        rows.append({"batch": batch, "in_process": round(local, 1), "http": round(served, 1),
                     "http_over_in_process": round(served / local, 2)})
    http.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--pollers", type=int, default=100)
    parser.add_argument("--poll-seconds", type=float, default=20)
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "poll", "oracle"])
    args = parser.parse_args()
    started = stack.up("dev")
    from api.keys import create_key
    from db.session import session_scope

    with session_scope() as session:
        key = create_key(session, "bench-system")[1]
    try:
        with httpx.Client(base_url=URL, headers={"X-API-Key": key}, timeout=120) as client:
            for workers in (1, 2) if "throughput" not in args.skip else ():
                print("throughput", throughput(client, workers, args.jobs, args.queries), flush=True)
            if "poll" not in args.skip:
                print("GET /jobs/{id}",
                      poll_latency(client, key, args.pollers, args.poll_seconds, args.queries), flush=True)
        for row in oracle_ratio() if "oracle" not in args.skip else ():
            print("oracle", row, flush=True)
    finally:
        stack.down("dev", (*started, "worker"))


if __name__ == "__main__":
    main()
