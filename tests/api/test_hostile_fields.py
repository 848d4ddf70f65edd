"""Field values that once reached the database or numpy unchecked and answered 500 (found by probing
beyond what the schema fuzzer generates): each is now a 4xx that says what is wrong, storing nothing."""
from __future__ import annotations

import json

from tests.api.conftest import stored_nothing, submit


def test_a_policy_id_with_a_nul_is_not_found_not_a_crash(env, clip_npy) -> None:
    response = submit(env, clip_npy, attack="rlsb", params=json.dumps({"policy": "\u0000abc"}))
    assert response.status_code == 404 and "32 hex digits" in response.json()["detail"]
    assert stored_nothing(env)


def test_a_negative_seed_is_refused_at_submission(env, clip_npy) -> None:
    response = submit(env, clip_npy, params=json.dumps({"seed": -1}))
    assert response.status_code == 422 and "params.seed" in response.json()["detail"]
    assert stored_nothing(env)


def test_a_negative_target_seed_of_a_campaign_is_refused(env) -> None:
    body = {"model": "mini", "attacks": [{"name": "nes_pgd", "params": {}}], "goal": "targeted",
            "target_rule": {"kind": "random", "seed": -1}, "max_queries": 10}
    response = env["client"].post("/campaigns", json=body, headers=env["alice"])
    assert response.status_code == 422 and "seed" in response.json()["detail"]
    assert stored_nothing(env)
