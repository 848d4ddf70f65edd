"""The HTTP surface, driven with TestClient: a temp SQLite database, a fake oracle, a fake broker."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from api import deps, keys
from api.routes import jobs as job_routes
from core.video import clip_sha256
from db.models import Artifact, Job, JobStatus, QueryRecord
from tests.api.conftest import HEADER, stored_nothing, submit


def test_keys_are_required(env) -> None:
    client = env["client"]
    assert client.get("/jobs").status_code == 401
    assert HEADER in client.get("/jobs").json()["detail"]
    assert client.get("/jobs", headers={HEADER: keys.generate_key()}).status_code == 401
    with env["sessions"]() as s:
        keys.revoke_key(s, "1")
    response = client.get("/jobs", headers=env["alice"])
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_submit_stores_job_first_query_and_input(env, clip_npy: bytes) -> None:
    response = submit(env, clip_npy, params='{"epsilon": 0.03}')
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued" and job["source_label"] == 1 and job["source_label_name"] == "run"
    assert job["progress"] == {"queries_used": 1, "max_queries": 100, "fraction": 0.01, "best_score": None,
                               "best_distance": None}
    assert job["params"]["epsilon"] == 0.03 and "sigma" in job["params"]
    assert job["links"]["adversarial_npy"] is None
    assert env["broker"].sent == [("vaas.run_attack", [job["id"]])]
    assert env["oracle"].predict_calls == [("mini", (1, 4, 8, 8, 3))]

    with env["sessions"]() as s:
        row = s.get(Job, job["id"])
        assert (row.queries_used, row.batches_sent, row.goal) == (1, 1, "untargeted")
        (query,) = s.scalars(select(QueryRecord).where(QueryRecord.job_id == row.id)).all()
        (artifact,) = s.scalars(select(Artifact).where(Artifact.job_id == row.id)).all()
    stored = np.load(artifact.path)
    assert stored.shape == (4, 8, 8, 3) and stored.dtype == np.uint8
    assert (query.seq, query.batch_id, query.status, query.label) == (0, 0, "answered", 1)
    assert query.clip_sha256 == clip_sha256(stored)
    assert artifact.kind == "input" and artifact.size_bytes == Path(artifact.path).stat().st_size


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"attack": "nope"}, 422, "unknown attack"),
        ({"params": "{"}, 422, "not valid JSON"),
        ({"params": '{"bogus": 1}'}, 422, "params.bogus"),
        ({"max_queries": "1"}, 422, "at least 2"),
        ({"max_queries": "5000"}, 422, "between 2 and 1000"),
        ({"model": "resnet"}, 422, "served models are: mini"),
        ({"goal": "targeted"}, 422, "needs target_label"),
        ({"goal": "targeted", "target_label": "9"}, 422, "[0, 4)"),
        ({"goal": "targeted", "target_label": "1"}, 422, "already predicts label 1"),
    ],
)
def test_refused_submissions_store_nothing(env, clip_npy: bytes, fields, status: int, words: str) -> None:
    response = submit(env, clip_npy, **fields)
    assert response.status_code == status
    assert words in response.json()["detail"]
    assert stored_nothing(env) and env["broker"].sent == []


def test_undecodable_video_is_422(env) -> None:
    response = submit(env, b"definitely not a video" * 10)
    assert response.status_code == 422 and "cannot use the video" in response.json()["detail"]
    assert stored_nothing(env) and env["oracle"].predict_calls == []


def test_oversized_upload_is_413_before_the_oracle(env) -> None:
    response = submit(env, b"\x93NUMPY" + b"\0" * 60_000)
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    assert stored_nothing(env) and env["oracle"].predict_calls == []


def test_oversized_upload_with_a_field_error_sent_first_reports_the_field(env) -> None:
    response = submit(env, b"\0" * 60_000, attack="nope")
    assert response.status_code == 422 and "unknown attack" in response.json()["detail"]


def test_non_multipart_body_is_415(env) -> None:
    response = env["client"].post("/jobs", headers=env["alice"], json={"video": "x"})
    assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]


def test_missing_video_is_422(env) -> None:
    response = env["client"].post("/jobs", headers=env["alice"], data={"max_queries": "10"},
                                  files={"other": ("x.npy", b"123")})
    assert response.status_code == 422
    response = env["client"].post("/jobs", headers=env["alice"], files={"max_queries": (None, "10")})
    assert response.status_code == 422 and "missing the 'video'" in response.json()["detail"]


def test_broker_down_marks_the_job_error_and_answers_503(env, clip_npy: bytes) -> None:
    env["broker"].down = True
    response = submit(env, clip_npy)
    assert response.status_code == 503 and "broker" in response.json()["detail"]
    with env["sessions"]() as s:
        (job,) = s.scalars(select(Job)).all()
    assert job.status == "error" and "broker" in job.error and job.finished_at is not None


def test_jobs_are_private_and_listed_newest_first(env, clip_npy: bytes) -> None:
    ids = [submit(env, clip_npy).json()["id"] for _ in range(3)]
    client = env["client"]
    page = client.get("/jobs?limit=2", headers=env["alice"]).json()
    assert page["total"] == 3 and [j["id"] for j in page["items"]] == ids[::-1][:2]
    assert client.get("/jobs?offset=2", headers=env["alice"]).json()["items"][0]["id"] == ids[0]
    assert client.get("/jobs?status=running", headers=env["alice"]).json()["total"] == 0
    assert client.get("/jobs", headers=env["bob"]).json()["total"] == 0
    mine = client.get(f"/jobs/{ids[0]}", headers=env["alice"])
    theirs = client.get(f"/jobs/{ids[0]}", headers=env["bob"])
    missing = client.get("/jobs/0123456789abcdef", headers=env["bob"])
    assert mine.status_code == 200
    assert theirs.status_code == missing.status_code == 404
    masked = missing.json()["detail"].replace("0123456789abcdef", ids[0])
    assert theirs.json()["detail"] == masked
    assert client.get("/jobs?limit=21", headers=env["alice"]).status_code == 422
    assert "status" in client.get("/jobs?status=nope", headers=env["alice"]).json()["detail"]


def test_cancel_queued_then_conflict(env, clip_npy: bytes) -> None:
    job_id = submit(env, clip_npy).json()["id"]
    client = env["client"]
    assert client.delete(f"/jobs/{job_id}", headers=env["bob"]).status_code == 404
    response = client.delete(f"/jobs/{job_id}", headers=env["alice"])
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    again = client.delete(f"/jobs/{job_id}", headers=env["alice"])
    assert again.status_code == 409 and "already ended" in again.json()["detail"]


def test_cancel_running_only_raises_the_flag(env, clip_npy: bytes) -> None:
    job_id = submit(env, clip_npy).json()["id"]
    with env["sessions"]() as s:
        s.get(Job, job_id).status = JobStatus.running.value
        s.commit()
    response = env["client"].delete(f"/jobs/{job_id}", headers=env["alice"])
    assert response.status_code == 202 and response.json()["status"] == "running"
    with env["sessions"]() as s:
        assert s.get(Job, job_id).cancel_requested is True


def test_adversarial_download_states(env, clip_npy: bytes, tmp_path: Path) -> None:
    job_id = submit(env, clip_npy).json()["id"]
    client = env["client"]
    not_ready = client.get(f"/jobs/{job_id}/adversarial", headers=env["alice"])
    assert not_ready.status_code == 409 and "not ready: job is queued" in not_ready.json()["detail"]
    adversarial = np.full((4, 8, 8, 3), 7, np.uint8)
    path = tmp_path / "adv.npy"
    np.save(path, adversarial)
    with env["sessions"]() as s:
        job = s.get(Job, job_id)
        job.status = JobStatus.succeeded.value
        s.add(Artifact(job_id=job_id, kind="adversarial_npy", path=str(path), sha256="0" * 64,
                       size_bytes=path.stat().st_size))
        s.commit()
    response = client.get(f"/jobs/{job_id}/adversarial?format=npy", headers=env["alice"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert f'{job_id}-adversarial.npy' in response.headers["content-disposition"]
    assert np.array_equal(np.load(io.BytesIO(response.content)), adversarial)
    assert client.get(f"/jobs/{job_id}", headers=env["alice"]).json()["links"]["adversarial_npy"]
    mkv = client.get(f"/jobs/{job_id}/adversarial?format=mkv", headers=env["alice"])
    assert mkv.status_code == 404 and "without an adversarial clip" in mkv.json()["detail"]
    assert client.get(f"/jobs/{job_id}/adversarial?format=mp4", headers=env["alice"]).status_code == 422


def _add_queries(env, job_id: str, n: int) -> None:
    with env["sessions"]() as s:
        s.add_all([QueryRecord(job_id=job_id, seq=i, batch_id=1 + (i - 1) // 3, clip_sha256=f"{i:064x}",
                               status="sent") for i in range(1, n)])
        s.get(Job, job_id).queries_used = n
        s.commit()


def test_query_log_pages_and_exports(env, clip_npy: bytes, monkeypatch) -> None:
    job_id = submit(env, clip_npy).json()["id"]
    _add_queries(env, job_id, 12)
    client = env["client"]
    page = client.get(f"/jobs/{job_id}/queries?limit=5&offset=5", headers=env["alice"]).json()
    assert page["total"] == 12 and [q["seq"] for q in page["items"]] == [5, 6, 7, 8, 9]
    assert client.get(f"/jobs/{job_id}/queries", headers=env["bob"]).status_code == 404

    # Small chunks, so the export crosses several of them.
    original = job_routes.iter_query_chunks
    monkeypatch.setattr(job_routes, "iter_query_chunks",
                        lambda job, **_: original(job, sessions=env["sessions"], chunk_rows=5))
    exported = client.get(f"/jobs/{job_id}/queries?format=csv", headers=env["alice"])
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert f'attachment; filename="{job_id}-queries.csv"' == exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(r["seq"]) for r in rows] == list(range(12))
    assert rows[0]["status"] == "answered" and rows[1]["label"] == ""
    lines = client.get(f"/jobs/{job_id}/queries?format=jsonl", headers=env["alice"]).text.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(12))


def test_catalog_needs_a_key_health_does_not(env) -> None:
    client = env["client"]
    assert client.get("/attacks").status_code == client.get("/models").status_code == 401
    client.headers.update(env["alice"])
    attacks = client.get("/attacks").json()
    assert {"nes_pgd"} <= {a["name"] for a in attacks}
    nes = next(a for a in attacks if a["name"] == "nes_pgd")
    assert "epsilon" in nes["parameters"]["properties"]
    (model,) = client.get("/models").json()
    assert model["name"] == "mini" and model["labels"][1] == "run"
    assert model["input"] == {"frames": 4, "height": 8, "width": 8, "channels": 3, "dtype": "uint8",
                              "layout": "THWC"}


def test_docs_and_openapi_describe_the_upload_form(env) -> None:
    client = env["client"]
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    form = schema["paths"]["/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == {"video", "attack", "model", "goal", "target_label", "max_queries",
                                       "params"}


def test_healthz_reports_each_component(env, monkeypatch) -> None:
    from api.routes import catalog

    monkeypatch.setattr(catalog, "check_database", lambda: "SELECT 1 answered")
    monkeypatch.setattr(catalog, "check_broker", lambda: "queue 'celery' holds 0 message(s)")
    healthy = env["client"].get("/healthz")
    assert healthy.status_code == 200 and healthy.json()["status"] == "ok"
    assert set(healthy.json()["components"]) == {"database", "broker", "oracle"}

    def broker_down() -> str:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379")

    monkeypatch.setattr(catalog, "check_broker", broker_down)
    degraded = env["client"].get("/healthz")
    assert degraded.status_code == 503 and degraded.json()["status"] == "degraded"
    broker = degraded.json()["components"]["broker"]
    assert broker["ok"] is False and "Error 111" in broker["detail"]
    assert degraded.json()["components"]["database"]["ok"] is True


def test_database_down_is_503_not_500(env, tmp_path: Path) -> None:
    from sqlalchemy.orm import sessionmaker

    from db.session import make_engine

    # A SQLite file in a directory that does not exist: every connection attempt fails.
    unreachable = sessionmaker(bind=make_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}"))

    def broken_session():
        with unreachable() as s:
            yield s

    env["client"].app.dependency_overrides[deps.get_session] = broken_session
    response = env["client"].get("/jobs", headers=env["alice"])
    assert response.status_code == 503 and "database" in response.json()["detail"]
    assert response.headers["retry-after"]
