"""Per-key limits on the real stack (Postgres, Redis, Celery, TorchServe, the API over HTTP).

Each test gives a fresh key tiny limits with the operators' CLI (`python -m api.keys limits`), then
submits jobs, campaigns and policies over HTTP until a limit refuses one, and checks the answer (status,
Retry-After, advice) and that the refused request stored nothing: no job, no campaign, no audit row, no
uploaded file.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select

from core.settings import get_settings
from db.models import Campaign, Job, QueryRecord
from db.session import session_scope
from tests.conftest import ROOT, SAMPLE_NPY, TERMINAL, submit, wait_for

MODEL = "mini_c3d"
HOPELESS = '{"epsilon": 0.004}'  # one pixel level cannot move the model: the job runs until cancelled
ONE_CLIP = {"set": "attack_set", "per_class": 1, "limit": 1}


@dataclass
class Tenant:
    key: str
    key_id: int
    http: httpx.Client

    @property
    def prefix(self) -> str:
        return self.key[:12]


def set_limits(tenant: Tenant, **limits: int) -> str:
    """Through the operators' CLI, as an operator would; returns what it printed."""
    args = [f"--{name.replace('_', '-')}={value}" for name, value in limits.items()]
    result = subprocess.run([sys.executable, "-m", "api.keys", "limits", tenant.prefix, *args], cwd=ROOT,
                            env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def tenant(api: str, make_key: Callable[[str], str]) -> Iterator[Tenant]:
    from api.keys import find_key

    key = make_key("limits")
    with session_scope() as session:
        key_id = find_key(session, key).id
    with httpx.Client(base_url=api, headers={"X-API-Key": key}, timeout=120) as http:
        yield Tenant(key, key_id, http)
        cancel_active(http)


def cancel_active(http: httpx.Client) -> None:
    """Leave no job of the test running on the shared worker."""
    for status in ("queued", "running"):
        for job in http.get("/jobs", params={"status": status, "limit": 100}).json()["items"]:
            http.delete(f"/jobs/{job['id']}")


@dataclass(frozen=True)
class Stored:
    jobs: frozenset[str]
    campaigns: int
    queries_of_other_jobs: int
    uploads: frozenset[str]


def stored(tenant: Tenant, known_jobs: frozenset[str] | None = None) -> Stored:
    """The tenant's rows, and every uploaded file (the test stack's data directory is this session's).

    Audit rows are counted only for jobs other than `known_jobs` (default: the jobs there are now),
    since the known ones may be running and adding rows.
    """
    upload_dir = get_settings().upload_dir
    with session_scope() as session:
        jobs = frozenset(session.scalars(select(Job.id).where(Job.api_key_id == tenant.key_id)))
        known_jobs = jobs if known_jobs is None else known_jobs
        campaigns = session.scalar(select(func.count()).select_from(Campaign)
                                   .where(Campaign.api_key_id == tenant.key_id))
        others = session.scalar(select(func.count()).select_from(QueryRecord)
                                .join(Job, QueryRecord.job_id == Job.id)
                                .where(Job.api_key_id == tenant.key_id, Job.id.not_in(known_jobs)))
    uploads = frozenset(p.name for p in upload_dir.iterdir()) if upload_dir.exists() else frozenset()
    return Stored(jobs, campaigns, others, uploads)


def assert_refused_stored_nothing(tenant: Tenant, request: Callable[[], httpx.Response], status: int,
                                  *words: str) -> httpx.Response:
    before = stored(tenant)
    response = request()
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail
    assert stored(tenant, before.jobs) == before
    return response


def post_job(tenant: Tenant, max_queries: int = 30, params: str = "{}") -> httpx.Response:
    return submit(tenant.http, SAMPLE_NPY.read_bytes(), model=MODEL, max_queries=max_queries, params=params)


def post_campaign(tenant: Tenant, attacks: int = 1, max_queries: int = 30) -> httpx.Response:
    return tenant.http.post("/campaigns", json={
        "model": MODEL, "max_queries": max_queries, "clips": ONE_CLIP,
        "attacks": [{"name": "nes_pgd", "params": {"seed": i}} for i in range(attacks)]})


def post_uploaded_campaign(tenant: Tenant, max_queries: int = 30) -> httpx.Response:
    spec = {"model": MODEL, "max_queries": max_queries, "attacks": [{"name": "nes_pgd"}]}
    return tenant.http.post("/campaigns/upload", data={"spec": json.dumps(spec)},
                            files=[("video", ("clip.npy", SAMPLE_NPY.read_bytes()))])


def post_policy(tenant: Tenant, max_queries: int = 40) -> httpx.Response:
    return tenant.http.post("/policies",
                            json={"model": MODEL, "goal": "untargeted", "max_queries": max_queries})


def post_page_form(api: str, tenant: Tenant) -> httpx.Response:
    """The submit page, as a browser signed in with the key sends it."""
    with httpx.Client(base_url=api, cookies={"vaas_key": tenant.key}, timeout=120) as browser:
        return browser.post("/ui/jobs", headers={"accept": "text/html"},
                            data={"model": MODEL, "attack": "nes_pgd", "goal": "untargeted",
                                  "max_queries": "30", "params": "{}"},
                            files={"video": ("clip.npy", SAMPLE_NPY.read_bytes(),
                                             "application/octet-stream")})


# ------------------------------------------------------------------------------------------ tests
def test_active_jobs_limit_refuses_every_kind_of_submission(api: str, tenant: Tenant) -> None:
    assert "1 active (own)" in set_limits(tenant, active_jobs=1)
    running = post_job(tenant, max_queries=100_000, params=HOPELESS)
    assert running.status_code == 202, running.text

    words = ("1 of this API key's jobs are queued or running", "DELETE /jobs/{id}")
    assert_refused_stored_nothing(tenant, lambda: post_job(tenant), 429, *words)
    assert_refused_stored_nothing(tenant, lambda: post_campaign(tenant), 429, *words)
    assert_refused_stored_nothing(tenant, lambda: post_uploaded_campaign(tenant), 429, *words)
    assert_refused_stored_nothing(tenant, lambda: post_policy(tenant), 429, *words)

    before = stored(tenant)
    page = post_page_form(api, tenant)
    assert page.status_code == 429 and "too many active jobs" in page.text and 'id="submit-form"' in page.text
    assert stored(tenant, before.jobs) == before

    assert tenant.http.delete(f"/jobs/{running.json()['id']}").status_code == 202
    wait_for(tenant.http, running.json()["id"], timeout_s=120)
    accepted = post_job(tenant)  # the cancelled job no longer counts
    assert accepted.status_code == 202, accepted.text
    assert wait_for(tenant.http, accepted.json()["id"])["status"] in TERMINAL


def test_concurrent_submissions_never_overshoot_the_active_limit(tenant: Tenant) -> None:
    set_limits(tenant, active_jobs=2)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: post_job(tenant, max_queries=100_000, params=HOPELESS), range(6)))
    assert sorted(r.status_code for r in responses) == [202, 202, 429, 429, 429, 429]
    accepted = {r.json()["id"] for r in responses if r.status_code == 202}
    assert stored(tenant).jobs == accepted  # the four refused left no row


def test_rate_limit_counts_campaign_jobs_and_says_when_to_retry(tenant: Tenant) -> None:
    set_limits(tenant, jobs_per_minute=2)
    campaign = post_campaign(tenant, attacks=2)
    assert campaign.status_code == 202, campaign.text
    assert campaign.json()["progress"]["jobs"] == 2

    words = ("2 jobs per minute", "created 2 in the last 60 s")
    refused = assert_refused_stored_nothing(tenant, lambda: post_job(tenant), 429, *words)
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60 and f"Retry in {retry_after} s" in refused.json()["detail"]
    assert_refused_stored_nothing(tenant, lambda: post_policy(tenant), 429, *words)
    assert_refused_stored_nothing(tenant, lambda: post_campaign(tenant), 429, *words)
    # Three jobs at once can never fit two per minute: 403, with the advice to split.
    assert_refused_stored_nothing(tenant, lambda: post_campaign(tenant, attacks=3), 403,
                                  "would create 3 jobs", "split it")


def test_query_quota_refuses_with_403_and_an_operator_lifts_it(tenant: Tenant) -> None:
    assert "100 queries (own)" in set_limits(tenant, total_queries=100)
    words = ("query quota exceeded", "100 queries in all", f"python -m api.keys limits {tenant.prefix}")
    assert_refused_stored_nothing(tenant, lambda: post_job(tenant, max_queries=101), 403, *words)
    assert_refused_stored_nothing(tenant, lambda: post_campaign(tenant, max_queries=101), 403, *words)
    assert_refused_stored_nothing(tenant, lambda: post_uploaded_campaign(tenant, max_queries=101), 403,
                                  *words)
    assert_refused_stored_nothing(tenant, lambda: post_policy(tenant, max_queries=101), 403, *words)
    assert stored(tenant).jobs == frozenset()

    accepted = post_job(tenant, max_queries=60)
    assert accepted.status_code == 202, accepted.text
    ended = wait_for(tenant.http, accepted.json()["id"])
    spent = ended["progress"]["queries_used"]
    left = 100 - spent  # an ended job counts what it spent, not its budget
    assert post_job(tenant, max_queries=left + 1).status_code == 403
    default = f"{get_settings().key_total_queries:,} queries (default)"
    assert default in set_limits(tenant, total_queries=0)  # 0: back to the server's default
    assert post_job(tenant, max_queries=left + 1).status_code == 202
