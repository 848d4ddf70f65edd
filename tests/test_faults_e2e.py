"""Faults injected into a real stack (its own Redis and workers, Postgres behind a proxy that can be
cut, the shared TorchServe): every job ends (recovered, or failed with a reason), never spends more
than its budget, and keeps one audit row per query; a crashed job resumes from its best clip.

Each test appends what it injected and what it saw to var/test-artifacts/faults.jsonl, the figures
behind BENCHMARKS.md's fault table.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from tests.conftest import ROOT, SAMPLE_NPY, TERMINAL
from tests.faultkit import FaultStack, RedisServer, TcpProxy, free_port, wait_until

pytestmark = pytest.mark.stack

DATABASE = "vaas_faults"
DIRECT_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"
LEASE_S = 6
ARTIFACTS = Path(os.environ.get("VAAS_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts"))


@dataclass
class Faults:
    stack: FaultStack
    redis: RedisServer
    proxy: TcpProxy
    engine: object
    key: str
    data_dir: Path


def _fresh_database() -> None:
    admin = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def faults(api: str) -> Iterator[Faults]:  # `api`: the shared TorchServe runs, also when this file runs alone
    _fresh_database()
    redis, proxy = RedisServer(), TcpProxy(("127.0.0.1", 5432))
    data_dir = ROOT / "var" / "faults"
    shutil.rmtree(data_dir, ignore_errors=True)
    env = {
        "VAAS_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{DATABASE}",
        "VAAS_BROKER_URL": redis.url,
        "VAAS_DATA_DIR": str(data_dir),
        "VAAS_JOB_LEASE_S": str(LEASE_S),
        "VAAS_SWEEP_INTERVAL_S": "2",
        "VAAS_DB_RETRY_S": "4",
        "VAAS_ORACLE_OUTAGE_S": "90",
    }
    subprocess.run([sys.executable, "-m", "db.migrate"], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, **env, "VAAS_DATABASE_URL": DIRECT_URL})
    stack = FaultStack(env, data_dir / "logs", free_port())
    engine = create_engine(DIRECT_URL)
    from api.keys import create_key

    with Session(engine) as session:
        _, key = create_key(session, "faults")
    try:
        stack.start_api()
        yield Faults(stack, redis, proxy, engine, key, data_dir)
    finally:
        stack.stop_all()
        redis.stop()
        proxy.close()
        engine.dispose()


@pytest.fixture
def http(faults: Faults) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=faults.stack.api, headers={"X-API-Key": faults.key}, timeout=60) as client:
        yield client


def submit(http: httpx.Client, max_queries: int, model: str = "mini_c3d") -> str:
    response = http.post("/jobs", files={"video": ("clip.npy", SAMPLE_NPY.read_bytes())},
                         data={"attack": "nes_pgd", "max_queries": str(max_queries), "model": model})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def row(faults: Faults, job_id: str) -> dict:
    with faults.engine.connect() as conn:
        job = conn.execute(text(
            "SELECT status, queries_used, max_queries, attempts, best_score, error FROM jobs WHERE id = :id"),
            {"id": job_id}).mappings().one()
        seqs = [r[0] for r in conn.execute(text("SELECT seq FROM query_log WHERE job_id = :id ORDER BY seq"),
                                           {"id": job_id})]
        failed = conn.execute(text("SELECT count(*) FROM query_log WHERE job_id = :id AND status = 'failed'"),
                              {"id": job_id}).scalar()
    return {**job, "audit_rows": len(seqs), "seqs_contiguous": seqs == list(range(len(seqs))),
            "failed_rows": failed}


def wait_job(faults: Faults, job_id: str, until, timeout_s: float = 420) -> dict:
    state: dict = {}

    def reached() -> bool:
        state.update(row(faults, job_id))
        return until(state)

    wait_until(f"job {job_id} to reach the state", reached, timeout_s, 0.3)
    return state


def assert_budget_kept(state: dict) -> None:
    assert state["queries_used"] <= state["max_queries"], state
    assert state["audit_rows"] == state["queries_used"] and state["seqs_contiguous"], state


def record(fault: str, state: dict, **seen: object) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    entry = {"fault": fault, "status": state["status"], "attempts": state["attempts"],
             "queries_used": state["queries_used"], "max_queries": state["max_queries"],
             "audit_rows": state["audit_rows"], "failed_rows": state["failed_rows"], **seen}
    with (ARTIFACTS / "faults.jsonl").open("a") as out:
        out.write(json.dumps(entry, default=str) + "\n")


def checkpoint_score(faults: Faults, job_id: str) -> float:
    path = faults.data_dir / "checkpoints" / f"{job_id}.npz"
    wait_until("a checkpoint", path.exists, 30)
    with np.load(path) as saved:
        return float(saved["score"])


def ended(state: dict) -> bool:
    return state["status"] in TERMINAL


def test_sigkill_of_the_whole_worker_resumes_the_job_from_its_checkpoint(faults: Faults, http) -> None:
    faults.stack.start_worker("w-kill")
    job_id = submit(http, max_queries=700)
    wait_job(faults, job_id, lambda s: s["queries_used"] >= 300)
    saved = checkpoint_score(faults, job_id)
    faults.stack.kill("w-kill")  # SIGKILL to the main process and its children: the task is never acked
    killed_at = row(faults, job_id)["queries_used"]
    faults.stack.start_worker("w-after-kill")
    try:
        state = wait_job(faults, job_id, ended)
    finally:
        faults.stack.kill("w-after-kill", signal.SIGTERM)
    assert state["status"] in ("succeeded", "budget_exhausted", "failed"), state
    assert state["attempts"] == 2, state  # claimed again by the sweeper's re-published task
    assert http.get(f"/jobs/{job_id}").json()["attempts"] == 2  # users see that the run was resumed
    assert_budget_kept(state)
    assert state["queries_used"] > killed_at  # it went on, against the same budget
    assert state["best_score"] >= saved - 1e-5, (state, saved)  # the best clip before the crash was kept
    assert "re-published" in faults.stack.log("w-after-kill")
    record("SIGKILL of the worker (main process and children) mid-attack", state, queries_at_kill=killed_at,
           checkpoint_score=saved)


def test_sigkill_of_the_process_running_the_job(faults: Faults, http) -> None:
    faults.stack.start_worker("w-child")
    try:
        job_id = submit(http, max_queries=600)
        wait_job(faults, job_id, lambda s: s["queries_used"] >= 200)
        (child,) = faults.stack.children("w-child")
        os.kill(child, signal.SIGKILL)  # Celery gives the task back (reject_on_worker_lost)
        killed_at = row(faults, job_id)["queries_used"]
        state = wait_job(faults, job_id, ended)
    finally:
        faults.stack.kill("w-child", signal.SIGTERM)
    assert state["status"] in ("succeeded", "budget_exhausted", "failed") and state["attempts"] == 2, state
    assert_budget_kept(state)
    # Celery redelivers at once, but the new pool process must start first. Within the dead runner's
    # lease the delivery leaves the job and it resumes after expiry (the sweeper re-publishes it);
    # after the lease it claims the job directly. Both are one more attempt on the same budget.
    met_lease = "live lease" in faults.stack.log("w-child")
    record("SIGKILL of the pool process running the job", state, queries_at_kill=killed_at,
           redelivery="met the live lease" if met_lease else "after the lease expired")


def _backend_pid(model: str) -> int:
    workers = httpx.get(f"http://127.0.0.1:8081/models/{model}", timeout=10).json()[0]["workers"]
    return int(workers[0]["pid"])


def test_a_torchserve_backend_worker_killed_mid_job(faults: Faults, http) -> None:
    model = "lrcn"  # a model no other test attacks, so only this job feels the restart
    faults.stack.start_worker("w-oracle")
    try:
        job_id = submit(http, max_queries=450, model=model)
        wait_job(faults, job_id, lambda s: s["queries_used"] >= 100)
        before = _backend_pid(model)
        os.kill(before, signal.SIGKILL)
        state = wait_job(faults, job_id, ended)
    finally:
        faults.stack.kill("w-oracle", signal.SIGTERM)
    assert state["status"] in ("succeeded", "budget_exhausted", "failed"), state  # recovered, not error
    assert_budget_kept(state)
    wait_until("TorchServe to serve the model again", lambda: _backend_pid(model) != before, 120, 1)
    record("TorchServe backend worker SIGKILLed mid-job", state, model=model)


def test_redis_restart_mid_job_loses_no_job(faults: Faults, http) -> None:
    faults.stack.start_worker("w-redis")
    try:
        running = submit(http, max_queries=500)
        wait_job(faults, running, lambda s: s["status"] == "running" and s["queries_used"] >= 50)
        waiting = submit(http, max_queries=100)  # queued behind it: its task lives only in Redis
        faults.redis.stop()
        refused = http.post("/jobs", files={"video": ("clip.npy", SAMPLE_NPY.read_bytes())},
                            data={"attack": "nes_pgd", "max_queries": "100"})
        polled = http.get(f"/jobs/{running}")
        faults.redis.start()  # empty: the queued task is gone
        first = wait_job(faults, running, ended)
        second = wait_job(faults, waiting, ended)
    finally:
        faults.stack.kill("w-redis", signal.SIGTERM)
    assert refused.status_code == 503 and "broker" in refused.json()["detail"], refused.text
    assert polled.status_code == 200  # reads need only the database
    for state in (first, second):
        assert (state["status"] in ("succeeded", "budget_exhausted", "failed")
                and state["attempts"] == 1), state
        assert_budget_kept(state)
    assert "re-published" in faults.stack.log("w-redis")
    record("Redis restarted (queue lost) mid-job: the running job", first)
    record("Redis restarted (queue lost) mid-job: the queued job", second)


def test_postgres_unreachable_for_a_while(faults: Faults, http) -> None:
    faults.stack.start_worker("w-db")
    try:
        job_id = submit(http, max_queries=600)
        wait_job(faults, job_id, lambda s: s["queries_used"] >= 200)
        faults.proxy.cut()
        outage_started = time.monotonic()
        answers = set()
        while time.monotonic() - outage_started < 12:  # three times the worker's patience (4 s)
            answers.add(http.get(f"/jobs/{job_id}").status_code)
            time.sleep(1)
        faults.proxy.restore()
        state = wait_job(faults, job_id, ended)
    finally:
        faults.proxy.restore()
        faults.stack.kill("w-db", signal.SIGTERM)
    assert answers == {503}, answers  # never a 500 while the database is down
    assert state["status"] in ("succeeded", "budget_exhausted", "failed"), state
    assert state["attempts"] == 2, state  # the task gave up waiting, was retried, and resumed
    assert_budget_kept(state)
    assert http.get(f"/jobs/{job_id}").status_code == 200
    record("Postgres unreachable for 12 s mid-job (worker patience 4 s)", state, api_answers=sorted(answers))


def test_a_job_longer_than_the_visibility_timeout_runs_once(faults: Faults, http) -> None:
    faults.stack.start_worker("w-visibility", concurrency=2,
                              extra_env={"VAAS_BROKER_VISIBILITY_TIMEOUT_S": "3"})
    try:
        job_id = submit(http, max_queries=500)
        state = wait_job(faults, job_id, ended)
        time.sleep(2)
    finally:
        faults.stack.kill("w-visibility", signal.SIGTERM)
    assert state["attempts"] == 1, state
    assert_budget_kept(state)
    log = faults.stack.log("w-visibility")
    assert "live lease" in log  # the broker did hand the task out again, and it was left alone
    record("job longer than the broker's visibility timeout (3 s)", state,
           redeliveries_left_alone=log.count("live lease"))
