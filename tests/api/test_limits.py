"""Per-key limits (api/limits.py) through the HTTP surface: TestClient, SQLite, a fake oracle and broker.

Each refusal is checked for its status, its header, its advice, and that it stored nothing: no job, no
query row, no campaign, no file, and (where the pre-check can see it coming) no oracle query.
"""
from __future__ import annotations

import io
import json
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select, update

from api import keys
from api.routes import policies
from api.ui import COOKIE
from db.models import Artifact, Campaign, Job, JobStatus, QueryRecord
from tests.api.conftest import HEADER, count, submit

HTML = {"accept": "text/html"}


def set_limits(env, who: str = "alice", **limits: int) -> None:
    with env["sessions"]() as s:
        keys.set_limits(s, "1" if who == "alice" else "2", **limits)


def snapshot(env) -> dict:
    """Everything a refused submission must leave as it was."""
    uploads = env["settings"].upload_dir
    return {
        "jobs": count(env, Job), "queries": count(env, QueryRecord), "artifacts": count(env, Artifact),
        "campaigns": count(env, Campaign),
        "files": sorted(p.name for p in uploads.iterdir()) if uploads.exists() else [],
        "oracle_calls": len(env["oracle"].predict_calls), "queued": len(env["broker"].sent),
    }


def end_jobs(env, queries_used: int | None = None) -> None:
    """End every job as the worker would (budget spent, or `queries_used` of it)."""
    values = {"status": JobStatus.budget_exhausted.value, "finished_at": datetime.now(UTC)}
    with env["sessions"]() as s:
        s.execute(update(Job).values(**values, queries_used=queries_used if queries_used is not None
                                     else Job.max_queries))
        s.commit()


def age_jobs(env, *ages_s: float) -> None:
    """Backdate the jobs' creation, oldest first, by the given ages in seconds."""
    now = datetime.now(UTC)
    with env["sessions"]() as s:
        jobs = s.scalars(select(Job).order_by(Job.created_at)).all()
        assert len(jobs) == len(ages_s)
        for job, age in zip(jobs, ages_s, strict=True):
            job.created_at = now - timedelta(seconds=age)
        s.commit()


def _npy(clip: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, clip, allow_pickle=False)
    return buffer.getvalue()


def upload_campaign(env, clips: int, attacks: int = 1, max_queries: int = 50, who: str = "alice"):
    rng = np.random.default_rng(1)
    files = [("video", (f"clip{i}.npy", _npy(rng.integers(0, 256, (6, 10, 12, 3), dtype=np.uint8))))
             for i in range(clips)]
    spec = {"model": "mini", "max_queries": max_queries,
            "attacks": [{"name": "nes_pgd", "params": {"seed": i}} for i in range(attacks)]}
    return env["client"].post("/campaigns/upload", headers=env[who], data={"spec": json.dumps(spec)},
                              files=files)


# ------------------------------------------------------------------------------ active jobs
def test_active_jobs_limit_is_429_before_the_oracle_and_stores_nothing(env, clip_npy: bytes) -> None:
    set_limits(env, active_jobs=1)
    first = submit(env, clip_npy)
    assert first.status_code == 202, first.text
    before = snapshot(env)

    refused = submit(env, clip_npy)
    assert refused.status_code == 429
    detail = refused.json()["detail"]
    assert "1 of this API key's jobs are queued or running" in detail and "1 at once" in detail
    assert "this key's own limit" in detail and "DELETE /jobs/{id}" in detail
    assert "retry-after" not in refused.headers  # nobody knows when a job will end
    assert snapshot(env) == before  # no job, no query, no file, and the oracle was not asked

    assert env["client"].delete(f"/jobs/{first.json()['id']}", headers=env["alice"]).status_code == 202
    assert submit(env, clip_npy).status_code == 202  # a cancelled job is no longer active


def test_jobs_that_ended_are_not_active(env, clip_npy: bytes) -> None:
    set_limits(env, active_jobs=2)
    assert [submit(env, clip_npy).status_code for _ in range(3)] == [202, 202, 429]
    end_jobs(env)
    assert [submit(env, clip_npy).status_code for _ in range(3)] == [202, 202, 429]


# ------------------------------------------------------------------------------ rate
def test_rate_limit_is_429_with_retry_after_when_the_oldest_job_ages_out(env, clip_npy: bytes) -> None:
    set_limits(env, jobs_per_minute=2)
    assert [submit(env, clip_npy).status_code for _ in range(2)] == [202, 202]
    age_jobs(env, 50, 20)
    before = snapshot(env)

    refused = submit(env, clip_npy)
    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert 9 <= retry_after <= 10  # the job made 50 s ago leaves the 60 s window in 10 s
    detail = refused.json()["detail"]
    assert "2 jobs per minute" in detail and "created 2 in the last 60 s" in detail
    assert f"Retry in {retry_after} s" in detail
    assert snapshot(env) == before

    age_jobs(env, 61, 20)  # the oldest has left the window
    assert submit(env, clip_npy).status_code == 202


def test_rate_counts_jobs_whatever_their_status(env, clip_npy: bytes) -> None:
    set_limits(env, jobs_per_minute=1)
    assert submit(env, clip_npy).status_code == 202
    end_jobs(env)
    assert submit(env, clip_npy).status_code == 429


# ------------------------------------------------------------------------------ total queries
def test_quota_counts_spent_queries_of_ended_jobs_and_budgets_of_active_ones(env, clip_npy: bytes) -> None:
    set_limits(env, total_queries=150)
    assert submit(env, clip_npy, max_queries="100").status_code == 202
    before = snapshot(env)

    refused = submit(env, clip_npy, max_queries="60")
    assert refused.status_code == 403
    detail = refused.json()["detail"]
    assert "150 queries in all" in detail and "active jobs hold budgets of 100" in detail
    assert "50 remain" in detail and "asks for 60" in detail
    assert "python -m api.keys limits vaas_" in detail and "--total-queries N" in detail
    assert snapshot(env) == before

    end_jobs(env, queries_used=30)  # it ended having spent 30 of its 100: 120 remain
    assert submit(env, clip_npy, max_queries="60").status_code == 202
    refused = submit(env, clip_npy, max_queries="61")
    assert refused.status_code == 403 and "ended jobs spent 30" in refused.json()["detail"]


# ------------------------------------------------------------------------------ defaults and own values
def test_keys_without_their_own_limits_get_the_server_defaults(env, clip_npy: bytes) -> None:
    env["settings"].key_active_jobs = 1
    set_limits(env, "alice", active_jobs=2)
    assert [submit(env, clip_npy, key="bob").status_code for _ in range(2)] == [202, 429]
    assert "the server's default" in submit(env, clip_npy, key="bob").json()["detail"]
    assert [submit(env, clip_npy).status_code for _ in range(3)] == [202, 202, 429]
    assert "this key's own limit" in submit(env, clip_npy).json()["detail"]


def test_limits_are_per_key(env, clip_npy: bytes) -> None:
    set_limits(env, "alice", jobs_per_minute=1)
    assert [submit(env, clip_npy).status_code for _ in range(2)] == [202, 429]
    assert [submit(env, clip_npy, key="bob").status_code for _ in range(3)] == [202, 202, 202]


def test_resetting_a_limit_returns_the_key_to_the_default(env, clip_npy: bytes) -> None:
    set_limits(env, active_jobs=1)
    assert [submit(env, clip_npy).status_code for _ in range(2)] == [202, 429]
    set_limits(env, active_jobs=0)
    assert submit(env, clip_npy).status_code == 202


# ------------------------------------------------------------------------------ campaigns
def test_a_campaign_counts_every_job_it_fans_out(env) -> None:
    set_limits(env, active_jobs=5)
    accepted = upload_campaign(env, clips=2, attacks=2)  # 4 jobs
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["progress"]["jobs"] == 4
    before = snapshot(env)

    refused = upload_campaign(env, clips=2, attacks=1)  # 2 more: 6 > 5
    assert refused.status_code == 429
    assert "4 of this API key's jobs are queued or running" in refused.json()["detail"]
    assert "would add 2" in refused.json()["detail"]
    after = snapshot(env)
    # Its clips' labels were read while planning (that is how a campaign knows them); nothing was stored.
    assert {k: v for k, v in after.items() if k != "oracle_calls"} == {
        k: v for k, v in before.items() if k != "oracle_calls"}
    assert after["oracle_calls"] - before["oracle_calls"] <= 2


def test_a_campaign_at_the_limit_is_refused_before_any_oracle_query(env) -> None:
    set_limits(env, active_jobs=2)
    assert upload_campaign(env, clips=2).status_code == 202
    before = snapshot(env)
    refused = upload_campaign(env, clips=3)
    assert refused.status_code == 429
    assert snapshot(env) == before


def test_a_campaign_over_the_rate_or_quota_is_refused_whole(env) -> None:
    set_limits(env, jobs_per_minute=3, total_queries=1000)
    assert upload_campaign(env, clips=2, max_queries=100).status_code == 202
    refused = upload_campaign(env, clips=2, max_queries=100)  # 4 jobs in a minute > 3
    assert refused.status_code == 429 and "retry-after" in refused.headers
    assert count(env, Job) == 2 and count(env, Campaign) == 1

    set_limits(env, jobs_per_minute=100)
    refused = upload_campaign(env, clips=3, attacks=3, max_queries=100)  # 9 × 100 > 1000 - 200
    assert refused.status_code == 403 and "asks for 900" in refused.json()["detail"]
    assert count(env, Job) == 2 and count(env, Campaign) == 1


def test_a_campaign_larger_than_a_limit_can_never_fit_and_says_so(env) -> None:
    set_limits(env, jobs_per_minute=3)
    before = snapshot(env)
    refused = upload_campaign(env, clips=2, attacks=2)
    assert refused.status_code == 403  # not 429: waiting would not help
    detail = refused.json()["detail"]
    assert "would create 4 jobs, more than the 3 jobs per minute" in detail
    assert "split it" in detail and "--jobs-per-minute N" in detail
    assert snapshot(env)["jobs"] == before["jobs"] and count(env, Campaign) == 0


# ------------------------------------------------------------------------------ policies
@pytest.fixture
def pretraining_allowed(monkeypatch) -> None:
    # The fake oracle's model has no attacker-owned dataset; the limits come after that check.
    monkeypatch.setattr(policies, "_require_attacker_data", lambda model: None)


def test_pretraining_jobs_count_and_are_limited(env, clip_npy: bytes, pretraining_allowed) -> None:
    set_limits(env, active_jobs=1, total_queries=500)
    client = env["client"]
    refused = client.post("/policies", headers=env["alice"], json={"model": "mini", "max_queries": 501})
    assert refused.status_code == 403 and "asks for 501" in refused.json()["detail"]
    assert count(env, Job) == 0 and env["broker"].sent == []

    accepted = client.post("/policies", headers=env["alice"], json={"model": "mini", "max_queries": 400})
    assert accepted.status_code == 202, accepted.text
    refused = client.post("/policies", headers=env["alice"], json={"model": "mini", "max_queries": 10})
    assert refused.status_code == 429 and "1 of this API key's jobs" in refused.json()["detail"]
    assert submit(env, clip_npy, max_queries="10").status_code == 429  # the pre-training job is active
    assert count(env, Job) == 1


# ------------------------------------------------------------------------------ the submit page
def test_the_submit_page_shows_a_limit_as_an_error_on_the_form(env, clip_npy: bytes) -> None:
    set_limits(env, active_jobs=1)
    assert submit(env, clip_npy).status_code == 202
    env["client"].cookies.set(COOKIE, env["alice"][HEADER], path="/ui")
    before = snapshot(env)
    response = env["client"].post(
        "/ui/jobs", data={"model": "mini", "attack": "nes_pgd", "goal": "untargeted", "max_queries": "50",
                          "params": "{}"}, files={"video": ("clip.npy", clip_npy)}, headers=HTML)
    assert response.status_code == 429
    assert 'id="submit-form"' in response.text and "too many active jobs" in response.text
    assert snapshot(env) == before


# ------------------------------------------------------------------------------ concurrency
def test_concurrent_submissions_never_overshoot_a_limit(env, clip_npy: bytes) -> None:
    """All pass the pre-check together; the locked check lets exactly the allowed number through."""
    set_limits(env, active_jobs=3)
    statuses: list[int] = []
    start = threading.Barrier(8)

    def one() -> None:
        start.wait()
        statuses.append(submit(env, clip_npy).status_code)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [202] * 3 + [429] * 5
    assert count(env, Job) == 3 and count(env, QueryRecord) == 3
    assert len(list(env["settings"].upload_dir.iterdir())) == 3
