"""Benchmark: what the budget reservation and the audit log cost per query.

Times worker/oracle_client.OracleClient against the configured database (Postgres where it answers)
with the HTTP call replaced by an instant answer, so the figure is the bookkeeping alone: the
reservation transaction (UPDATE … RETURNING + N row inserts), the SHA-256 of each clip, and the
completion transaction (N row updates). Run: `python scripts/bench_audit.py` (prints a markdown table).
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts import stack  # noqa: E402

os.environ.update(stack.environment(stack.PROFILES["test"]))

import numpy as np  # noqa: E402
from sqlalchemy import delete  # noqa: E402
from tqdm import tqdm  # noqa: E402

from core.settings import get_settings  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.models import ApiKey, Job, QueryRecord  # noqa: E402
from db.session import new_session, session_scope  # noqa: E402
from worker.oracle_client import OracleClient  # noqa: E402


class InstantOracle:
    """Answers immediately: isolates the client's own bookkeeping from the model's time."""

    def predict(self, model: str, clips: np.ndarray) -> list[dict]:
        return [{"label": 0, "label_name": "x", "probability": 0.5} for _ in clips]


def _new_job(budget: int) -> str:
    with session_scope() as session:
        key = ApiKey(name="bench", prefix="bench", key_hash=os.urandom(32).hex())
        session.add(key)
        session.flush()
        job = Job(api_key_id=key.id, attack="bench", model="none", goal="untargeted", source_label=0,
                  source_label_name="x", source_probability=1.0, params={}, max_queries=budget,
                  input_filename="bench", input_sha256="0" * 64)
        session.add(job)
        session.flush()
        return job.id


def _drop_job(job_id: str) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        key = session.get(ApiKey, job.api_key_id)
        session.execute(delete(QueryRecord).where(QueryRecord.job_id == job_id))
        session.delete(job)
        session.flush()
        session.delete(key)


def measure(batch: int, requests: int, shape: tuple[int, ...]) -> dict[str, float]:
    job_id = _new_job(batch * requests + 1)
    client = OracleClient(job_id, "none", InstantOracle(), new_session, max_batch=batch)
    clips = np.random.default_rng(0).integers(0, 256, size=(batch, *shape), dtype=np.uint8)
    timings = []
    for _ in tqdm(range(requests), desc=f"batch {batch}", leave=False):
        started = time.perf_counter()
        client.query(clips)
        timings.append(time.perf_counter() - started)
    per_query_ms = 1000 * statistics.median(timings) / batch
    _drop_job(job_id)
    return {"batch": batch, "per_request_ms": 1000 * statistics.median(timings), "per_query_ms": per_query_ms}


def main() -> None:
    upgrade()
    settings = get_settings()
    shape = (16, 112, 112, 3)
    print(f"database: {settings.database_url.split('@')[-1]}  clip: {'×'.join(map(str, shape))} uint8\n")
    print("| batch (clips/request) | bookkeeping per request (ms, median) | per query (ms) |")
    print("|---:|---:|---:|")
    for batch, requests in ((1, 200), (16, 60), (48, 30)):
        row = measure(batch, requests, shape)
        print(f"| {row['batch']} | {row['per_request_ms']:.2f} | {row['per_query_ms']:.3f} |")


if __name__ == "__main__":
    main()
