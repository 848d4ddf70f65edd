"""RLSB through the real stack: a pre-training job (its own budget and audit log) produces a policy;
an rlsb attack job takes it, reports its pre-training queries apart from its own, and succeeds."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from model_server import attack_set
from tests.conftest import audit_rows, submit, wait_for

MODEL = "mini_c3d"
EASY = 12  # the attack set's rotate_cw clip at p = 0.66 (tests/test_attacks_e2e.py)
# A CPU-sized pre-training: 2 iterations of 2 actors × 8 steps on 2 clips per class.
SMALL_PRETRAINING = {"iterations": 2, "actors": 2, "timesteps": 8, "epochs": 1, "minibatch": 8,
                     "clips_per_class": 2}
PRETRAIN_BUDGET = 400


@pytest.fixture(scope="module")
def client(api, make_key):
    import httpx

    with httpx.Client(base_url=api, headers={"X-API-Key": make_key("policies")}, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def policy(client) -> dict:
    response = client.post("/policies", json={"model": MODEL, "goal": "untargeted",
                                              "max_queries": PRETRAIN_BUDGET, "params": SMALL_PRETRAINING})
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/policies/{response.json()['id']}"
    wait_for(client, response.json()["id"])
    return client.get(f"/policies/{response.json()['id']}").json()


def _npy(clip: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, clip)
    return buffer.getvalue()


def test_pretraining_is_a_job_with_its_own_budget_and_audit_log(client, policy):
    assert policy["status"] == "succeeded", policy
    used = policy["progress"]["queries_used"]
    assert 0 < used <= PRETRAIN_BUDGET
    assert len(audit_rows(policy["id"])) == used == policy["report"]["queries"]
    job = client.get(f"/jobs/{policy['id']}").json()
    assert job["kind"] == "pretrain" and job["source_label"] is None
    assert client.get(f"/jobs/{policy['id']}/queries").json()["total"] == used


def test_the_policy_file_downloads_and_lists(client, policy):
    from worker.attacks.rlsb import load_policy

    weights = client.get(policy["links"]["weights"])
    assert weights.status_code == 200
    assert load_policy(weights.content).frames == 16
    listed = client.get("/policies", params={"model": MODEL}).json()
    assert policy["id"] in [item["id"] for item in listed["items"]]


def test_rlsb_job_uses_the_latest_policy_and_reports_pretraining_apart(client, policy):
    clip = attack_set.clips(MODEL)[0][EASY]
    response = submit(client, _npy(clip), attack="rlsb", model=MODEL, max_queries=800,
                      params=json.dumps({"initial_directions": 10}))
    assert response.status_code == 202, response.text
    assert response.json()["params"]["policy"] == policy["id"]
    job = wait_for(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    report = job["metrics"]["attack"]
    assert report["policy_pretraining"] == {"policy": policy["id"],
                                            "queries": policy["progress"]["queries_used"],
                                            "seconds": policy["report"]["seconds"]}
    assert len(audit_rows(job["id"])) == job["progress"]["queries_used"] <= 800
    assert report["key_frames"]


def test_rlsb_without_a_fitting_policy_is_refused_with_advice(client, policy):
    clip = attack_set.clips(MODEL)[0][EASY]
    response = submit(client, _npy(clip), attack="rlsb", model=MODEL, max_queries=800, goal="targeted",
                      target_label=7)
    assert response.status_code == 422
    assert "POST /policies" in response.json()["detail"]


def test_another_keys_policy_is_not_found(api, make_key, policy):
    import httpx

    with httpx.Client(base_url=api, headers={"X-API-Key": make_key("stranger")}) as stranger:
        assert stranger.get(f"/policies/{policy['id']}").status_code == 404
        assert stranger.get(f"/policies/{policy['id']}/weights").status_code == 404


def test_pretraining_refuses_a_model_without_attacker_data(client):
    response = client.post("/policies", json={"model": "effnet_lite0_imagenet", "max_queries": 100})
    assert response.status_code == 422
    assert "attacker's own data" in response.json()["detail"]


def test_rlsb_spends_its_budget_exactly_and_the_same_seed_repeats_every_query(client, policy):
    clip = attack_set.clips(MODEL)[0][0]  # p = 0.99; no MAP bound, so the whole budget goes
    params = json.dumps({"seed": 3, "map_bound": 0, "initial_directions": 10, "policy": policy["id"]})
    hashes = []
    for _ in range(2):  # one after the other, so TorchServe never merges their requests into one batch
        response = submit(client, _npy(clip), attack="rlsb", model=MODEL, max_queries=100, params=params)
        assert response.status_code == 202, response.text
        job = wait_for(client, response.json()["id"])
        assert job["progress"]["queries_used"] == 100 == len(audit_rows(job["id"]))
        hashes.append([row.clip_sha256 for row in audit_rows(job["id"])])
    assert hashes[0] == hashes[1]
