"""Shared fixtures. Tests that need services ask for `api` and get the real stack (test profile):
TorchServe, a Celery worker with two processes and the API, on Postgres and Redis where they answer.
Whatever the session started is stopped at its end; whatever was already running is left alone.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from scripts import stack

# VAAS_TEST_STACK=test2 (or test3) gives a second pytest session on this machine a stack of its own.
TEST_STACK = os.environ.get("VAAS_TEST_STACK", "test")
TEST_PROFILE = stack.PROFILES[TEST_STACK]
# Small upload limit so the streaming check is cheap to exercise; set before settings are first read.
os.environ.setdefault("VAAS_MAX_UPLOAD_BYTES", str(8 * 1024 * 1024))
os.environ.update(stack.environment(TEST_PROFILE, announce=False))

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_NPY = ROOT / "samples" / "sample_clip.npy"
SAMPLE_MKV = ROOT / "samples" / "sample_clip.mkv"
TERMINAL = {"succeeded", "budget_exhausted", "failed", "cancelled", "error"}


@pytest.fixture(scope="session")
def api() -> Iterator[str]:
    started = stack.up(TEST_STACK)
    try:
        yield f"http://127.0.0.1:{TEST_PROFILE.api_port}"
    finally:
        stack.down(TEST_STACK, tuple(started))


@pytest.fixture(scope="session")
def make_key(api: str) -> Callable[[str], str]:
    from api.keys import create_key
    from db.session import session_scope

    def _make(name: str = "test") -> str:
        with session_scope() as session:
            return create_key(session, name)[1]

    return _make


@pytest.fixture
def client(api: str, make_key: Callable[[str], str]) -> Iterator:
    import httpx

    with httpx.Client(base_url=api, headers={"X-API-Key": make_key("client")}, timeout=120) as http:
        yield http


@pytest.fixture(scope="session")
def sample_clip() -> np.ndarray:
    return np.load(SAMPLE_NPY, allow_pickle=False)


def submit(client, video: bytes, filename: str = "clip.npy", **form) -> object:
    data = {"attack": "nes_pgd", "goal": "untargeted", "max_queries": "2000"}
    data.update({k: str(v) for k, v in form.items()})
    return client.post("/jobs", files={"video": (filename, video, "application/octet-stream")}, data=data)


def wait_for(client, job_id: str, until: Callable[[dict], bool] = lambda j: j["status"] in TERMINAL,
             timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not reach the expected state in {timeout_s} s: {job}")


def wait_campaign(client, campaign_id: str, timeout_s: float = 600) -> dict:
    """Poll GET /campaigns/{id} until every job of the campaign has ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        campaign = client.get(f"/campaigns/{campaign_id}").json()
        if campaign["status"] == "finished":
            return campaign
        time.sleep(0.5)
    raise AssertionError(f"campaign {campaign_id} did not finish: {campaign['progress']}")


def keyed_client(api: str, key: str):
    """An API client that sends `key` in the key header, as every caller of the JSON API does."""
    import httpx

    return httpx.Client(base_url=api, headers={"X-API-Key": key}, timeout=120)


def audit_rows(job_id: str) -> list:
    from sqlalchemy import select

    from db.models import QueryRecord
    from db.session import session_scope

    with session_scope() as session:
        return list(
            session.execute(
                select(QueryRecord.seq, QueryRecord.status, QueryRecord.clip_sha256, QueryRecord.label)
                .where(QueryRecord.job_id == job_id)
                .order_by(QueryRecord.seq)
            ).all()
        )
