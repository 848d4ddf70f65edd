"""Schemathesis against the running test API: every operation of /openapi.json, no 5xx.

Each operation is fuzzed three ways: valid-looking (positive) and schema-breaking (negative) requests
with a real API key, and negative requests that may break the key itself. Every answer goes through
schemathesis' `not_a_server_error` check. Operations with an id in their path are fuzzed again with the
ids of a real job, campaign and pre-training job of the fuzz key, so that their query parameters reach
the code behind the 404. Generation is derandomized (seeded) so a CI run is reproducible, and bounded
so the test takes about a minute.

Everything the fuzzer created is cancelled afterwards. The figures (operations, requests, status
codes, server errors) go to var/test-artifacts/fuzz.json (or $VAAS_TEST_ARTIFACTS) for BENCHMARKS.md.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import schemathesis  # the dev extra (pip install -e '.[dev]'); it brings hypothesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.conftest import ROOT, SAMPLE_NPY, keyed_client

pytestmark = pytest.mark.stack

ARTIFACTS = Path(os.environ.get("VAAS_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts"))
EXAMPLES_PER_OPERATION = 50  # per generation mode
EXAMPLES_WITH_REAL_IDS = 25
REQUEST_TIMEOUT_S = 60
ID_PARAMETERS = ("job_id", "campaign_id", "policy_id")


@dataclass
class FuzzLog:
    """Every request the fuzzer made: operation, status, and the server errors with how to replay them."""

    statuses: Counter = field(default_factory=Counter)
    per_operation: dict[str, Counter] = field(default_factory=dict)
    server_errors: list[dict] = field(default_factory=list)
    without_negative_cases: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def record(self, label: str, case, response) -> None:
        self.statuses[response.status_code] += 1
        self.per_operation.setdefault(label, Counter())[response.status_code] += 1
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except (AssertionError, BaseExceptionGroup):
            self.server_errors.append({
                "operation": label, "status": response.status_code, "body": response.text[:500],
                "replay": case.as_curl_command(headers={"X-API-Key": "$KEY"}),
            })

    def summary(self) -> dict:
        return {
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "operations_fuzzed": len(self.per_operation),
            "requests": sum(self.statuses.values()),
            "status_codes": {str(code): n for code, n in sorted(self.statuses.items())},
            "server_errors": len(self.server_errors),
            "seconds": round(time.monotonic() - self.started, 1),
            "examples_per_operation_and_mode": EXAMPLES_PER_OPERATION,
            "operations_without_negative_cases": sorted(set(self.without_negative_cases)),
            "per_operation": {label: {str(c): n for c, n in sorted(counts.items())}
                              for label, counts in sorted(self.per_operation.items())},
            "server_error_samples": self.server_errors[:20],
        }


@pytest.fixture(scope="module")
def fuzz_key(make_key) -> str:
    return make_key("fuzz")


@pytest.fixture(scope="module")
def http(api: str, fuzz_key: str) -> Iterator[httpx.Client]:
    with keyed_client(api, fuzz_key) as client:
        yield client
        cancel_everything(client)


def cancel_everything(http: httpx.Client) -> None:
    """The fuzzer may have started real jobs and campaigns: stop them so the worker is free again."""
    for campaign in http.get("/campaigns", params={"limit": 500}).json()["items"]:
        if campaign["status"] == "running":
            http.delete(f"/campaigns/{campaign['id']}")
    for job in http.get("/jobs", params={"limit": 500}).json()["items"]:
        if job["status"] in ("queued", "running"):
            http.delete(f"/jobs/{job['id']}")


@pytest.fixture(scope="module")
def real_ids(http: httpx.Client) -> dict[str, str]:
    """A job, a campaign and a pre-training job of the fuzz key, cancelled at once (only their ids matter)."""
    clip = SAMPLE_NPY.read_bytes()
    job = http.post("/jobs", files={"video": ("clip.npy", clip)}, data={"max_queries": "50"})
    campaign = http.post("/campaigns/upload", files=[("video", ("clip.npy", clip))],
                         data={"spec": json.dumps({"attacks": [{"name": "nes_pgd"}], "max_queries": 50})})
    policy = http.post("/policies", json={"model": "mini_c3d", "goal": "untargeted", "max_queries": 50})
    for response in (job, campaign, policy):
        assert response.status_code == 202, response.text
    ids = {"job_id": job.json()["id"], "campaign_id": campaign.json()["id"], "policy_id": policy.json()["id"]}
    cancel_everything(http)
    return ids


def fuzz(operation, mode: GenerationMode, examples: int, api: str, key: str, log: FuzzLog,
         path_parameters: dict[str, str] | None = None) -> None:
    """Send `examples` generated requests for one operation and record every answer."""
    label = operation.label

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def send(case) -> None:
        response = case.call(base_url=api, headers={"X-API-Key": key}, timeout=REQUEST_TIMEOUT_S)
        log.record(label, case, response)

    try:
        send()
    except Unsatisfiable:
        # The operation has nothing to make invalid (no parameter, no body: GET /attacks, /healthz, …).
        assert mode is GenerationMode.NEGATIVE, f"no valid request could be generated for {label}"
        log.without_negative_cases.append(label)


def load_schema(api: str, security_parameters: bool):
    """The API's schema; without security parameters the fuzzer never touches the key `fuzz` sends, so
    negative cases break parameters and bodies and reach the routes' validation instead of a 401."""
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": security_parameters}})
    return schemathesis.openapi.from_url(f"{api}/openapi.json", config=config, timeout=30)


def test_no_operation_answers_a_server_error(api: str, fuzz_key: str, http: httpx.Client,
                                            real_ids: dict[str, str]) -> None:
    with_key = {op.label: op for op in (r.ok() for r in load_schema(api, False).get_all_operations())}
    # A negative pass that may also break the key: missing, empty or malformed X-API-Key headers.
    with_auth = {op.label: op for op in (r.ok() for r in load_schema(api, True).get_all_operations())}
    assert len(with_key) >= 20 and set(with_key) == set(with_auth), sorted(with_key)
    log = FuzzLog()
    try:
        for label, operation in with_key.items():
            fuzz(operation, GenerationMode.POSITIVE, EXAMPLES_PER_OPERATION, api, fuzz_key, log)
            fuzz(operation, GenerationMode.NEGATIVE, EXAMPLES_PER_OPERATION, api, fuzz_key, log)
            fuzz(with_auth[label], GenerationMode.NEGATIVE, EXAMPLES_PER_OPERATION, api, fuzz_key, log)
            ids = {p.name: real_ids[p.name] for p in operation.path_parameters if p.name in ID_PARAMETERS}
            if ids:
                fuzz(operation, GenerationMode.POSITIVE, EXAMPLES_WITH_REAL_IDS, api, fuzz_key, log, ids)
                fuzz(operation, GenerationMode.NEGATIVE, EXAMPLES_WITH_REAL_IDS, api, fuzz_key, log, ids)
    finally:
        cancel_everything(http)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "fuzz.json").write_text(json.dumps(log.summary(), indent=2))
    assert not log.server_errors, json.dumps(log.server_errors[:5], indent=2)
    assert set(log.per_operation) == set(with_key), "every operation was sent requests"


# What the fuzzer found once, pinned so it stays fixed whatever the seed draws next time.
FUZZ_FINDINGS = {
    "nul-in-path": "/jobs/%00",
    "nul-in-query-filter": "/jobs?model=mini%00c3d",
    "nul-in-policy-id": "/policies/%00",
    "nul-in-campaign-report-id": "/campaigns/%00/report",
    "offset-past-bigint": "/jobs?offset=99999999999999999999",
    "offset-past-bigint-campaigns": "/campaigns?offset=9223372036854775808",
    "offset-past-bigint-policies": "/policies?offset=1206912799011409717870366556160",
}


@pytest.mark.parametrize("name", sorted(FUZZ_FINDINGS))
def test_what_the_fuzzer_found_is_a_4xx(name: str, http: httpx.Client) -> None:
    response = http.get(FUZZ_FINDINGS[name])
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]


def test_a_file_name_with_control_characters_is_stored_cleaned(http: httpx.Client) -> None:
    """A NUL in a multipart file name once reached Postgres (500); the name is only informational."""
    boundary = "vaas-fuzz"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="max_queries"\r\n\r\n50\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="video"; '
            'filename="clip\x00\x07.npy"\r\n\r\n'
            ).encode() + SAMPLE_NPY.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    response = http.post("/jobs", content=body,
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 202, response.text
    http.delete(f"/jobs/{response.json()['id']}")
    from db.models import Job
    from db.session import session_scope

    with session_scope() as session:
        assert session.get(Job, response.json()["id"]).input_filename == "clip__.npy"
