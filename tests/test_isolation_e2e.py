"""Tenant isolation on the real stack: another key's resources do not exist for you.

Key A makes one of each resource (an ended attack job, a campaign, a policy, and a job still running);
key B then calls every route of the app that takes a resource id in its path, with every method it
accepts, for every id of A's, and must get the ownership 404 each time (never 200, 403, 409 or 5xx),
on the JSON API (header key) and on the pages (a browser's session cookie). The routes are read from
the app itself, and the test fails if one with a path parameter was not exercised: a route added later
without an ownership check cannot slip by. A's resources must be exactly as they were afterwards (B's
DELETE cancelled nothing), B's lists must not show them, and a revoked key gets nowhere.
"""
from __future__ import annotations

import itertools
import json
import re
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import routing as fastapi_routing
from sqlalchemy import select

from api.main import create_app
from api.ui import COOKIE
from db.models import Artifact, Campaign, Job, JobStatus, QueryRecord
from db.session import session_scope
from tests.conftest import SAMPLE_NPY, submit, wait_campaign, wait_for

MODEL = "mini_c3d"
HOPELESS = '{"epsilon": 0.004}'  # one pixel level cannot move the model: runs until cancelled
SMALL_PRETRAINING = {"iterations": 2, "actors": 2, "timesteps": 8, "epochs": 1, "minibatch": 8,
                     "clips_per_class": 2}
PRETRAINING_PATIENCE_S = 90  # then A cancels it: a cancelled pre-training job is still A's resource
HTML = {"accept": "text/html"}
NOT_YOURS = re.compile(r"no (job|campaign|policy) [0-9a-f]{32} for this API key")


# ------------------------------------------------------------------------------ the app's routes
@dataclass(frozen=True)
class RouteCall:
    path: str  # the template, e.g. /jobs/{job_id}/queries
    method: str
    endpoint: Callable


def resource_routes() -> list[RouteCall]:
    """Every (path, method) of the app whose path takes a parameter (static files excepted)."""
    app = create_app()
    contexts = (fastapi_routing.iter_route_contexts(app.routes)
                if hasattr(fastapi_routing, "iter_route_contexts") else app.routes)
    calls = []
    for route in contexts:
        path, methods, endpoint = (route.path, getattr(route, "methods", None),
                                   getattr(route, "endpoint", None))
        if methods and endpoint and "{" in path:
            calls += [RouteCall(path, method, endpoint) for method in sorted(methods)]
    return calls


def path_parameters(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)


def literal_choices(endpoint: Callable, name: str) -> list[str] | None:
    """The allowed values of a path parameter typed as a Literal (a page's view or file name)."""
    hint = typing.get_type_hints(endpoint).get(name)
    if typing.get_origin(hint) is typing.Literal:
        return [str(value) for value in typing.get_args(hint)]
    return None


# ------------------------------------------------------------------------------ A's resources
@dataclass
class Owner:
    key: str
    http: httpx.Client
    ended_job: str
    campaign: str
    campaign_job: str
    policy: str
    live_job: str

    def ids_for(self, parameter: str) -> list[str]:
        ids = {"job_id": [self.ended_job, self.campaign_job, self.policy, self.live_job],
               "campaign_id": [self.campaign],
               "policy_id": [self.policy]}
        return ids.get(parameter, [])

    @property
    def all_ids(self) -> list[str]:
        return [self.ended_job, self.campaign, self.campaign_job, self.policy, self.live_job]


def client_for(api: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=api, headers={"X-API-Key": key}, timeout=120)


def browser_for(api: str, key: str) -> httpx.Client:
    """What a signed-in browser sends: the session cookie, no API key header."""
    return httpx.Client(base_url=api, headers={"cookie": f"{COOKIE}={key}", **HTML}, timeout=120,
                        follow_redirects=False)


def make_policy(http: httpx.Client) -> str:
    response = http.post("/policies", json={"model": MODEL, "goal": "untargeted", "max_queries": 40,
                                            "params": SMALL_PRETRAINING})
    assert response.status_code == 202, response.text
    policy = response.json()["id"]
    try:
        wait_for(http, policy, timeout_s=PRETRAINING_PATIENCE_S)
    except AssertionError:
        http.delete(f"/jobs/{policy}")
        wait_for(http, policy, timeout_s=120)
    return policy


@pytest.fixture(scope="module")
def owner(api: str, make_key: Callable[[str], str]) -> Iterator[Owner]:
    key = make_key("isolation-owner")
    with client_for(api, key) as http:
        ended = submit(http, SAMPLE_NPY.read_bytes(), model=MODEL, max_queries=30)
        assert ended.status_code == 202, ended.text
        campaign = http.post("/campaigns", json={
            "model": MODEL, "max_queries": 30, "attacks": [{"name": "nes_pgd"}],
            "clips": {"set": "attack_set", "per_class": 1, "limit": 1}})
        assert campaign.status_code == 202, campaign.text
        wait_for(http, ended.json()["id"])
        campaign_job = wait_campaign(http, campaign.json()["id"])["jobs"][0]["id"]
        policy = make_policy(http)
        live = submit(http, SAMPLE_NPY.read_bytes(), model=MODEL, max_queries=100_000, params=HOPELESS)
        assert live.status_code == 202, live.text
        wait_for(http, live.json()["id"], until=lambda job: job["status"] == "running", timeout_s=120)
        yield Owner(key, http, ended.json()["id"], campaign.json()["id"], campaign_job, policy,
                    live.json()["id"])
        http.delete(f"/jobs/{live.json()['id']}")


@pytest.fixture(scope="module")
def intruder_key(api: str, make_key: Callable[[str], str]) -> str:
    return make_key("isolation-intruder")


def snapshot(owner: Owner) -> dict:
    """A's rows as they are: jobs (the live one without its moving counters), campaign, audit rows, files."""
    with session_scope() as session:
        jobs = {}
        for job in session.scalars(select(Job).where(Job.id.in_(owner.all_ids))):
            ended = JobStatus(job.status).terminal
            jobs[job.id] = (job.status if ended else "active", job.cancel_requested,
                            job.queries_used if ended else None, job.finished_at)
        campaign = session.get(Campaign, owner.campaign)
        ended_rows = {job_id: len(session.scalars(select(QueryRecord.id)
                                                  .where(QueryRecord.job_id == job_id)).all())
                      for job_id, state in jobs.items() if state[0] != "active"}
        artifacts = sorted(session.scalars(select(Artifact.path).where(Artifact.job_id.in_(owner.all_ids))))
    return {"jobs": jobs, "campaign": (campaign.id, campaign.api_key_id), "audit_rows": ended_rows,
            "artifacts": artifacts}


def calls_for(route: RouteCall, ids_for: Callable[[str], list[str]]) -> list[str]:
    """Every concrete URL of the route over A's ids and every allowed value of its Literal path
    parameters, then each value of each Literal query parameter (a download's other formats)."""
    choices = []
    in_path = path_parameters(route.path)
    for name in in_path:
        values = ids_for(name) or literal_choices(route.endpoint, name)
        assert values, (f"{route.method} {route.path}: this test does not know what to put in {{{name}}}; "
                        "teach Owner.ids_for the new kind of resource id")
        choices.append([(name, value) for value in values])
    urls = [fill(route.path, dict(combo)) for combo in itertools.product(*choices)]
    variants = [f"?{name}={value}" for name in typing.get_type_hints(route.endpoint) if name not in in_path
                for value in literal_choices(route.endpoint, name) or []]
    return urls + [url + variant for url in urls for variant in variants]


def send(api: str, key: str, route: RouteCall, url: str) -> httpx.Response:
    page = route.path.startswith("/ui/")
    with (browser_for(api, key) if page else client_for(api, key)) as http:
        return http.request(route.method, url)


def says_not_yours(response: httpx.Response) -> bool:
    if response.status_code != 404:
        return False
    if response.headers.get("content-type", "").startswith("application/json"):
        return bool(NOT_YOURS.search(response.json()["detail"]))
    return bool(NOT_YOURS.search(response.text)) or response.request.method == "HEAD"


# ------------------------------------------------------------------------------------------ tests
def test_every_resource_route_answers_404_to_another_key(api: str, owner: Owner, intruder_key: str) -> None:
    routes = resource_routes()
    assert len(routes) >= 16  # jobs 4, campaigns 3, policies 2, pages 7 when this was written
    before = snapshot(owner)
    exercised: set[tuple[str, str]] = set()
    for route in routes:
        for url in calls_for(route, owner.ids_for):
            response = send(api, intruder_key, route, url)
            assert says_not_yours(response), (f"B {route.method} {url}: {response.status_code} "
                                               f"{response.text[:300]}")
            exercised.add((route.path, route.method))
    assert exercised == {(r.path, r.method) for r in routes}
    assert snapshot(owner) == before  # B's DELETEs cancelled nothing, its GETs changed nothing
    live = owner.http.get(f"/jobs/{owner.live_job}").json()
    assert live["status"] == "running", live


def test_the_same_calls_reach_the_owners_resources(api: str, owner: Owner) -> None:
    """The control: each route does find A's resources for A (so B's 404s are ownership, not typos)."""
    def ended_only(parameter: str) -> list[str]:  # the owner must not cancel its own live job here
        return [i for i in owner.ids_for(parameter) if i != owner.live_job]

    for route in resource_routes():
        answers = [send(api, owner.key, route, url) for url in calls_for(route, ended_only)]
        assert any(not says_not_yours(r) and r.status_code < 500 for r in answers), (
            f"A {route.method} {route.path}: {[(r.status_code, r.text[:120]) for r in answers]}")


def test_lists_and_filters_show_only_your_own(api: str, owner: Owner, intruder_key: str) -> None:
    with client_for(api, intruder_key) as http:
        for url, params in (("/jobs", {}), ("/jobs", {"campaign_id": owner.campaign}),
                            ("/jobs", {"kind": "pretrain"}), ("/jobs", {"status": "running"}),
                            ("/campaigns", {}), ("/policies", {}), ("/policies", {"model": MODEL})):
            page = http.get(url, params={**params, "limit": 500})
            assert page.status_code == 200, page.text
            assert page.json()["total"] == 0 and page.json()["items"] == [], (url, params)
    with browser_for(api, intruder_key) as browser:
        for url in ("/ui/jobs", f"/ui/jobs?campaign={owner.campaign}", "/ui/jobs?kind=pretrain",
                    "/ui/campaigns"):
            page = browser.get(url)
            assert page.status_code == 200, (url, page.status_code)
            # The page echoes its own filter back into the form; anything else of A's would be a leak.
            assert not any(i in page.text for i in owner.all_ids if i not in url), url
    with client_for(api, owner.key) as http:  # the control: A's own lists do show them
        assert {owner.ended_job, owner.live_job, owner.policy, owner.campaign_job} <= {
            j["id"] for j in http.get("/jobs", params={"limit": 500}).json()["items"]}


def test_another_keys_policy_cannot_be_used(api: str, owner: Owner, intruder_key: str) -> None:
    from api.keys import find_key

    with session_scope() as session:
        intruder_id = find_key(session, intruder_key).id
    with client_for(api, intruder_key) as http:
        job = submit(http, SAMPLE_NPY.read_bytes(), attack="rlsb", model=MODEL, max_queries=100,
                     params=json.dumps({"policy": owner.policy}))
        campaign = http.post("/campaigns", json={
            "model": MODEL, "max_queries": 100,
            "attacks": [{"name": "rlsb", "params": {"policy": owner.policy}}],
            "clips": {"set": "attack_set", "per_class": 1, "limit": 1}})
    for response in (job, campaign):
        assert response.status_code == 404 and owner.policy in response.json()["detail"], response.text
        assert says_not_yours(response)
    with session_scope() as session:
        assert session.scalars(select(Job.id).where(Job.api_key_id == intruder_id)).all() == []
        assert session.scalars(select(Campaign.id).where(Campaign.api_key_id == intruder_id)).all() == []


def test_a_cookie_never_opens_the_json_api(api: str, owner: Owner) -> None:
    with httpx.Client(base_url=api, headers={"cookie": f"{COOKIE}={owner.key}"}, timeout=60) as http:
        assert http.get(f"/jobs/{owner.ended_job}").status_code == 401
        assert http.delete(f"/jobs/{owner.live_job}").status_code == 401
    assert owner.http.get(f"/jobs/{owner.live_job}").json()["status"] == "running"


def test_a_revoked_key_gets_401_on_the_api_and_sign_in_on_the_pages(
        api: str, owner: Owner, make_key: Callable[[str], str]) -> None:
    from api.keys import revoke_key

    key = make_key("isolation-revoked")
    with client_for(api, key) as http:
        assert http.get("/jobs").status_code == 200
    with session_scope() as session:
        revoke_key(session, key[:12])
    with client_for(api, key) as http:
        for method, url in (("GET", "/jobs"), ("GET", f"/jobs/{owner.ended_job}"), ("GET", "/campaigns"),
                            ("GET", "/policies"), ("DELETE", f"/jobs/{owner.live_job}")):
            response = http.request(method, url)
            assert response.status_code == 401 and "revoked" in response.json()["detail"], (method, url)
        refused = submit(http, SAMPLE_NPY.read_bytes(), model=MODEL, max_queries=30)
        assert refused.status_code == 401
    with browser_for(api, key) as browser:
        for url in ("/ui/jobs", f"/ui/jobs/{owner.ended_job}", f"/ui/campaigns/{owner.campaign}",
                    "/ui/submit"):
            response = browser.get(url)
            assert response.status_code == 303, (url, response.status_code)
            assert (response.headers["location"].startswith("/ui/login?next=")
                    and "revoked" in response.headers["location"]), response.headers["location"]
        signed_in = browser.post("/ui/login", data={"key": key, "next": "/ui/jobs"})
        assert signed_in.status_code == 401 and "revoked" in signed_in.text
    assert owner.http.get(f"/jobs/{owner.live_job}").json()["status"] == "running"

