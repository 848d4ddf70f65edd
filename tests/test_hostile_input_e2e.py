"""Hostile uploads through the real stack: every case of tests/hostile_videos.py gets a 4xx that says
what is wrong, and leaves no job, query, artifact or campaign row and no file behind.

Each case goes to POST /jobs; a few also go to POST /campaigns/upload, alone and beside a valid clip (a
campaign is refused whole). The figures (cases tried, status codes, server errors, anything left behind)
are written to var/test-artifacts/hostile-input.json (or $VAAS_TEST_ARTIFACTS) for BENCHMARKS.md.
"""
from __future__ import annotations

import json
import mimetypes
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import ROOT, SAMPLE_NPY, TEST_PROFILE, keyed_client
from tests.hostile_videos import HostileVideo, hostile_video, names

pytestmark = pytest.mark.stack

ARTIFACTS = Path(os.environ.get("VAAS_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts"))
UPLOAD_DIR = TEST_PROFILE.data_dir / "uploads"
JOB_FORM = {"attack": "nes_pgd", "goal": "untargeted", "max_queries": "100"}
CAMPAIGN_SPEC = json.dumps({"attacks": [{"name": "nes_pgd"}], "max_queries": 100})
# The campaign route reads the same decoder; a sample of each family of failure is enough there.
CAMPAIGN_CASES = ["random-bytes", "png-image", "truncated-mp4", "4k-bomb-mkv", "npy-declares-108-GB",
                  "npy-pickled-object", "npy-float32", "audio-only-mkv"]


@dataclass
class Tally:
    """What the service answered, case by case, for the summary."""

    answers: dict[str, dict] = field(default_factory=dict)
    left_behind: list[str] = field(default_factory=list)

    def record(self, route: str, case: HostileVideo, response: httpx.Response, seconds: float) -> None:
        self.answers[f"{route} {case.name}"] = {
            "route": route, "case": case.name, "bytes": len(case.data), "why": case.why,
            "status": response.status_code, "detail": _detail(response), "seconds": round(seconds, 3),
        }

    def summary(self) -> dict:
        statuses = Counter(str(answer["status"]) for answer in self.answers.values())
        return {
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "corpus_cases": len(names()),
            "requests": len(self.answers),
            "status_codes": dict(sorted(statuses.items())),
            "server_errors": sum(answer["status"] >= 500 for answer in self.answers.values()),
            "accepted": sum(answer["status"] < 400 for answer in self.answers.values()),
            "left_behind": self.left_behind,
            "slowest_seconds": max((a["seconds"] for a in self.answers.values()), default=0.0),
            "answers": list(self.answers.values()),
        }


def _detail(response: httpx.Response) -> str | None:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return None
    return detail if isinstance(detail, str) else None


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    tally = Tally()
    yield tally
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "hostile-input.json").write_text(json.dumps(tally.summary(), indent=2, ensure_ascii=False))


@pytest.fixture(scope="module")
def hostile_key(make_key) -> str:
    return make_key("hostile-input")


@pytest.fixture(scope="module")
def http(api: str, hostile_key: str) -> Iterator[httpx.Client]:
    with keyed_client(api, hostile_key) as client:
        yield client


def stored_for(plaintext_key: str) -> dict[str, object]:
    """Everything a refused upload could have left: the key's rows and the files of the upload folder."""
    from api.keys import find_key
    from db.models import Artifact, Campaign, Job, QueryRecord
    from db.session import session_scope

    with session_scope() as session:
        key = find_key(session, plaintext_key)
        assert key is not None
        jobs = select(Job.id).where(Job.api_key_id == key.id)

        def count(model: type, *where: object) -> int:
            return session.scalar(select(func.count()).select_from(model).where(*where)) or 0

        rows = {
            "jobs": count(Job, Job.api_key_id == key.id),
            "query_log": count(QueryRecord, QueryRecord.job_id.in_(jobs)),
            "artifacts": count(Artifact, Artifact.job_id.in_(jobs)),
            "campaigns": count(Campaign, Campaign.api_key_id == key.id),
        }
    files = sorted(path.name for path in UPLOAD_DIR.iterdir()) if UPLOAD_DIR.is_dir() else []
    return {**rows, "upload_files": files}


def _part(case: HostileVideo) -> tuple[str, bytes, str]:
    content_type = mimetypes.guess_type(case.filename)[0] or "application/octet-stream"
    return case.filename, case.data, content_type


def assert_refused_and_nothing_stored(
    response: httpx.Response, case: HostileVideo, before: dict, after: dict, tally: Tally
) -> None:
    if after != before:
        tally.left_behind.append(case.name)
    assert 400 <= response.status_code < 500, f"{case.name}: {response.status_code} {response.text[:500]}"
    detail = _detail(response)
    assert detail and case.expect in detail, f"{case.name}: detail {detail!r} does not say {case.expect!r}"
    assert after == before, f"{case.name} left something behind: {before} -> {after}"


@pytest.mark.parametrize("name", names())
def test_a_hostile_job_upload_is_refused_with_its_reason_and_stores_nothing(
    name: str, http: httpx.Client, hostile_key: str, tally: Tally
) -> None:
    case = hostile_video(name)
    before = stored_for(hostile_key)
    started = time.perf_counter()
    response = http.post("/jobs", files={"video": _part(case)}, data=JOB_FORM)
    tally.record("POST /jobs", case, response, time.perf_counter() - started)
    assert_refused_and_nothing_stored(response, case, before, stored_for(hostile_key), tally)
    assert response.status_code in (413, 422)


@pytest.mark.parametrize("name", CAMPAIGN_CASES)
def test_a_hostile_campaign_upload_is_refused_whole_even_beside_a_valid_clip(
    name: str, http: httpx.Client, hostile_key: str, tally: Tally
) -> None:
    case = hostile_video(name)
    valid = ("sample_clip.npy", SAMPLE_NPY.read_bytes(), "application/octet-stream")
    for route, parts in (("POST /campaigns/upload", [_part(case)]),
                         ("POST /campaigns/upload (after a valid clip)", [valid, _part(case)])):
        before = stored_for(hostile_key)
        started = time.perf_counter()
        response = http.post("/campaigns/upload", data={"spec": CAMPAIGN_SPEC},
                             files=[("video", part) for part in parts])
        tally.record(route, case, response, time.perf_counter() - started)
        assert_refused_and_nothing_stored(response, case, before, stored_for(hostile_key), tally)
        assert response.status_code == 422


def test_the_service_still_accepts_a_valid_clip_after_the_corpus(
    http: httpx.Client, hostile_key: str
) -> None:
    """The refusals left the API, the decoder and the oracle in working order."""
    response = http.post("/jobs", files={"video": ("sample_clip.npy", SAMPLE_NPY.read_bytes())},
                         data=JOB_FORM)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert http.delete(f"/jobs/{job_id}").status_code in (202, 409)  # cancel: this test needs no attack run
    assert stored_for(hostile_key)["jobs"] == 1
