"""End to end over HTTP: upload → Celery worker → TorchServe → audit log → download."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest

from core.settings import get_settings
from core.video import clip_sha256, decode_lossless
from model_server.client import OracleHTTP
from tests.conftest import SAMPLE_MKV, audit_rows, submit, wait_for

# One pixel level of ε cannot move this model: jobs with it run until their budget or cancel.
HOPELESS = '{"epsilon": 0.004}'


def _npy_bytes(clip: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, clip)
    return buffer.getvalue()


def test_attack_succeeds_and_artifacts_reproduce_the_oracle_answer(client, sample_clip):
    response = submit(client, SAMPLE_MKV.read_bytes(), "sample.mkv", max_queries=20_000)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"].endswith(f"/jobs/{job['id']}")
    assert job["progress"]["queries_used"] == 1  # the clean prediction is the job's first query

    job = wait_for(client, job["id"])
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    metrics = job["metrics"]
    assert metrics["success"] is True
    assert metrics["linf"] <= 12  # ε = 0.05 → 12 levels
    assert metrics["queries"] == job["progress"]["queries_used"] <= 20_000

    npy = client.get(f"/jobs/{job['id']}/adversarial", params={"format": "npy"})
    mkv = client.get(f"/jobs/{job['id']}/adversarial", params={"format": "mkv"})
    assert npy.status_code == mkv.status_code == 200
    from_npy, from_mkv = decode_lossless(npy.content), decode_lossless(mkv.content)
    assert np.array_equal(from_npy, from_mkv)

    rows = audit_rows(job["id"])
    assert len(rows) == job["progress"]["queries_used"]
    last_answered = [r for r in rows if r.status == "answered"][-1]
    assert last_answered.clip_sha256 == clip_sha256(from_npy)

    settings = get_settings()
    oracle = OracleHTTP(settings.oracle_url, settings.oracle_management_url)
    answer = oracle.predict(job["model"], from_npy[None])[0]
    oracle.close()
    assert answer["label"] != job["source_label"]
    assert answer["label"] == metrics["final_label"]


def test_small_budget_ends_exhausted_exactly_at_the_cap(client, sample_clip):
    response = submit(client, _npy_bytes(sample_clip), max_queries=37, params=HOPELESS)
    assert response.status_code == 202, response.text
    job = wait_for(client, response.json()["id"])
    assert job["status"] == "budget_exhausted", job
    assert job["progress"]["queries_used"] == 37
    rows = audit_rows(job["id"])
    assert len(rows) == 37
    assert [r.seq for r in rows] == list(range(37))
    assert all(r.status == "answered" for r in rows)
    page = client.get(f"/jobs/{job['id']}/queries", params={"limit": 10}).json()
    assert page["total"] == 37 and len(page["items"]) == 10


def test_concurrent_jobs_never_share_or_overspend_budgets(client, sample_clip):
    body = _npy_bytes(sample_clip)
    budgets = [120, 97]
    ids = [submit(client, body, max_queries=b, params=HOPELESS).json()["id"] for b in budgets]
    jobs = [wait_for(client, job_id) for job_id in ids]
    for job, budget in zip(jobs, budgets, strict=True):
        assert job["status"] == "budget_exhausted"
        assert job["progress"]["queries_used"] == budget
        assert len(audit_rows(job["id"])) == budget


def test_cancel_stops_within_one_oracle_round(client, sample_clip):
    job = submit(client, _npy_bytes(sample_clip), max_queries=100_000, params=HOPELESS).json()
    wait_for(client, job["id"], until=lambda j: j["progress"]["queries_used"] > 100, timeout_s=300)
    response = client.delete(f"/jobs/{job['id']}")
    assert response.status_code == 202, response.text
    used_at_cancel = response.json()["progress"]["queries_used"]
    job = wait_for(client, job["id"], timeout_s=120)
    assert job["status"] == "cancelled"
    # At most the request in flight (≤ one batch) lands after the cancel.
    assert job["progress"]["queries_used"] <= used_at_cancel + get_settings().oracle_max_batch
    settled = len(audit_rows(job["id"]))
    threading.Event().wait(2.0)
    assert len(audit_rows(job["id"])) == settled == job["progress"]["queries_used"]
    assert client.delete(f"/jobs/{job['id']}").status_code == 409


def test_same_seed_gives_the_same_queries(client, sample_clip):
    body = _npy_bytes(sample_clip)
    ids = []
    for _ in range(2):  # one after the other, so TorchServe never merges their requests into one batch
        ids.append(submit(client, body, max_queries=150, params=HOPELESS).json()["id"])
        wait_for(client, ids[-1])
    first, second = ([r.clip_sha256 for r in audit_rows(i)] for i in ids)
    assert first == second and len(first) == 150


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_audit_log_downloads(client, sample_clip, fmt):
    job = submit(client, _npy_bytes(sample_clip), max_queries=60, params=HOPELESS).json()
    wait_for(client, job["id"])
    response = client.get(f"/jobs/{job['id']}/queries", params={"format": fmt})
    assert response.status_code == 200
    assert "attachment" in response.headers.get("content-disposition", "")
    lines = [line for line in response.text.splitlines() if line.strip()]
    assert len(lines) == 60 + (1 if fmt == "csv" else 0)
