"""Campaigns through the real stack: fan-out, fairness, cancellation, and a report whose numbers are
exactly those computed from its jobs' rows (read back through the public API)."""
from __future__ import annotations

import json
import statistics

import pytest

from tests.conftest import TERMINAL, wait_campaign

MODEL = "mini_c3d"
ATTACKS = [{"name": "nes_pgd", "params": {}}, {"name": "opt", "params": {"initial_directions": 3}}]


@pytest.fixture(scope="module")
def client(api, make_key):
    import httpx

    with httpx.Client(base_url=api, headers={"X-API-Key": make_key("campaigns")}, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def finished(client) -> dict:
    body = {"model": MODEL, "attacks": ATTACKS, "goal": "targeted", "target_rule": {"kind": "next"},
            "max_queries": 60, "clips": {"set": "attack_set", "per_class": 1, "limit": 3}}
    response = client.post("/campaigns", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["progress"]["jobs"] == 6
    return wait_campaign(client, response.json()["id"])


def test_every_attack_gets_the_same_clips_targets_and_budget(finished):
    by_attack: dict[str, set] = {}
    for job in finished["jobs"]:
        by_attack.setdefault(job["attack"], set()).add((job["clip_index"], job["target_label"]))
    assert by_attack["nes_pgd"] == by_attack["opt"] and len(by_attack["opt"]) == 3
    assert all(job["status"] in TERMINAL and job["queries_used"] <= 60 for job in finished["jobs"])


def test_the_report_equals_what_its_jobs_rows_say(client, finished):
    report = client.get(f"/campaigns/{finished['id']}/report").json()
    assert report["complete"]
    rows = {row["attack"]: row for row in report["attacks"]}
    for attack in ("nes_pgd", "opt"):
        jobs = [client.get(f"/jobs/{j['id']}").json() for j in finished["jobs"] if j["attack"] == attack]
        wins = [j for j in jobs if j["status"] == "succeeded"]
        row = rows[attack]
        assert row["clips"] == row["finished"] == 3
        assert row["fooling_rate"] == pytest.approx(len(wins) / 3)
        assert row["queries_mean_all"] == pytest.approx(
            statistics.fmean(j["progress"]["queries_used"] for j in jobs))
        assert row["map"] == pytest.approx(statistics.fmean(j["metrics"]["map"] for j in jobs))
        assert row["linf"] == pytest.approx(statistics.fmean(j["metrics"]["linf"] for j in jobs))
        if wins:
            won = [j["progress"]["queries_used"] for j in wins]
            assert row["queries_median_successes"] == pytest.approx(statistics.median(won))
    csv_lines = client.get(f"/campaigns/{finished['id']}/report", params={"format": "csv"}).text.splitlines()
    assert csv_lines[0].startswith("attack,clips,finished") and len(csv_lines) == 3
    page = client.get(f"/campaigns/{finished['id']}/report", params={"format": "html"})
    assert page.headers["content-type"].startswith("text/html") and page.text.count("<svg") == 2


def test_cancelling_a_campaign_stops_all_its_jobs(client):
    body = {"model": MODEL, "attacks": [{"name": "nes_pgd"}], "max_queries": 20_000,
            "clips": {"per_class": 1, "limit": 4}}
    campaign = client.post("/campaigns", json=body).json()
    cancelled = client.delete(f"/campaigns/{campaign['id']}")
    assert cancelled.status_code == 202
    final = wait_campaign(client, campaign["id"], timeout_s=120)
    assert {job["status"] for job in final["jobs"]} <= {"cancelled"}


def test_a_bad_attack_is_refused_and_nothing_is_stored(client):
    before = client.get("/campaigns").json()["total"]
    body = {"model": MODEL, "attacks": [{"name": "nes_pgd"}, {"name": "nope"}], "max_queries": 60}
    response = client.post("/campaigns", json=body)
    assert response.status_code == 422 and "attacks[1]" in response.json()["detail"]
    assert client.get("/campaigns").json()["total"] == before


def test_another_keys_campaign_is_not_found(api, make_key, finished):
    import httpx

    with httpx.Client(base_url=api, headers={"X-API-Key": make_key("stranger")}) as stranger:
        assert stranger.get(f"/campaigns/{finished['id']}").status_code == 404
        assert stranger.delete(f"/campaigns/{finished['id']}").status_code == 404


def test_a_campaign_on_uploaded_clips_gives_each_attack_the_same_clips(client):
    import json

    from tests.conftest import SAMPLE_MKV, SAMPLE_NPY, audit_rows

    spec = {"model": MODEL, "attacks": ATTACKS, "max_queries": 40}
    files = [("video", ("sample.npy", SAMPLE_NPY.read_bytes())),
             ("video", ("sample.mkv", SAMPLE_MKV.read_bytes()))]
    response = client.post("/campaigns/upload", data={"spec": json.dumps(spec)}, files=files)
    assert response.status_code == 202, response.text
    campaign = wait_campaign(client, response.json()["id"])
    assert campaign["clips"]["names"] == ["sample.npy", "sample.mkv"]
    assert sorted((j["attack"], j["clip_index"]) for j in campaign["jobs"]) == [
        ("nes_pgd", 0), ("nes_pgd", 1), ("opt", 0), ("opt", 1)]
    for job in campaign["jobs"]:  # each job's first query is its own clean query, logged once
        rows = audit_rows(job["id"])
        assert rows[0].seq == 0 and len(rows) == job["queries_used"] <= 40


def test_an_upload_campaign_without_clips_is_refused(client):
    response = client.post("/campaigns/upload",
                           data={"spec": json.dumps({"attacks": ATTACKS, "max_queries": 40})},
                           files={"other": ("x.txt", b"x")})
    assert response.status_code == 422
