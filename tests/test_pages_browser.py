"""The pages in a real browser (headless Debian Chromium driven by Playwright) on the real stack: a
finished job's page and a campaign's page show images that load and the same numbers as the API; a job
submitted through the form runs to its end while the page follows it. Screenshots go to
var/test-artifacts/screenshots/ (or $VAAS_TEST_ARTIFACTS/screenshots)."""
from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from api.ui import number
from tests.conftest import ROOT, SAMPLE_NPY, TERMINAL, keyed_client, submit, wait_campaign, wait_for

CHROMIUM = os.environ.get("VAAS_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("VAAS_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts")) / "screenshots"
pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: apt-get install chromium "
                    "(or set VAAS_CHROMIUM to its path)")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def key(make_key) -> str:
    return make_key("pages")


@pytest.fixture(scope="module")
def http(api: str, key: str) -> Iterator:
    with keyed_client(api, key) as client:
        yield client


@pytest.fixture
def page(browser, api: str, key: str) -> Iterator:
    """A browser tab of a fresh session, signed in with the module's key through the sign-in page."""
    context = browser.new_context(base_url=api, viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto("/ui/jobs")
    assert "/ui/login" in tab.url
    tab.fill("input[name=key]", key)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/ui/jobs")
    yield tab
    context.close()
    assert not errors, f"script errors on the page: {errors}"


@pytest.fixture(scope="module")
def finished_job(http) -> dict:
    response = submit(http, SAMPLE_NPY.read_bytes(), attack="heuristic", max_queries="1500")
    assert response.status_code == 202, response.text
    job = wait_for(http, response.json()["id"])
    assert job["status"] == "succeeded", job
    return job


def shot(tab, name: str) -> None:
    tab.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def images_loaded(tab) -> list[str]:
    """The src of every <img> that did not load (a broken image has naturalWidth 0)."""
    tab.wait_for_load_state("networkidle")
    return tab.eval_on_selector_all("img", "imgs => imgs.filter(i => !i.complete || i.naturalWidth === 0)"
                                           ".map(i => i.src)")


def test_a_finished_jobs_page_shows_its_frames_and_the_apis_numbers(page, http, finished_job) -> None:
    job_id = finished_job["id"]
    page.goto(f"/ui/jobs/{job_id}")
    assert page.locator(".strip").count() == 4 and images_loaded(page) == []
    assert page.inner_text("[data-testid=status]") == "succeeded"
    field = lambda name: page.get_attribute(f"#progress [data-field={name}]", "data-value")  # noqa: E731
    assert int(field("queries_used")) == finished_job["progress"]["queries_used"]
    assert float(field("best_score")) == finished_job["progress"]["best_score"]
    for key in ("map", "linf", "sparsity", "frames_perturbed", "ssim", "final_probability", "wall_time_s"):
        cell = page.locator(f"[data-metric={key}]")
        assert float(cell.get_attribute("data-value")) == finished_job["metrics"][key], key
        assert cell.inner_text() == number(finished_job["metrics"][key]), key

    # The key frames and bars are the frames the downloaded clip actually changes.
    adversarial = np.load(io.BytesIO(http.get(f"/jobs/{job_id}/adversarial?format=npy").content),
                          allow_pickle=False)
    changed = np.flatnonzero((adversarial != np.load(SAMPLE_NPY)).reshape(len(adversarial), -1).any(axis=1))
    assert page.inner_text("[data-field=key_frames]") == ", ".join(map(str, changed))
    bars = page.eval_on_selector_all(".frame-bar", "bars => bars.map(b => Number(b.dataset.value))")
    assert [i for i, v in enumerate(bars) if v > 0] == list(changed)
    assert len(changed) == finished_job["metrics"]["frames_perturbed"]

    # The query curve has a point per query (this log is short enough to show whole).
    page.wait_for_selector("#curve circle")
    assert int(page.get_attribute("#curve", "data-points")) == finished_job["progress"]["queries_used"]

    # Downloads through the page are the API's bytes; the preview is labelled lossy.
    from_page = page.request.get(f"/ui/jobs/{job_id}/download/adversarial.npy").body()
    assert from_page == http.get(f"/jobs/{job_id}/adversarial?format=npy").content
    assert "LOSSY" in page.inner_text("#downloads li.lossy")
    assert page.request.get(f"/ui/jobs/{job_id}/preview.webm").headers["content-type"] == "video/webm"
    shot(page, "job-finished")

    # The audit log pages through the same rows as GET /jobs/{id}/queries.
    api_rows = http.get(f"/jobs/{job_id}/queries", params={"limit": 50, "offset": 50}).json()["items"]
    page.click("[data-testid=log-next]")
    page.wait_for_url("**log_offset=50**")
    seqs = page.eval_on_selector_all("[data-testid=audit] tbody tr",
                                     "rows => rows.map(r => Number(r.dataset.seq))")
    probabilities = page.eval_on_selector_all("[data-testid=audit] tbody tr td[data-value]",
                                              "cells => cells.map(c => Number(c.dataset.value))")
    assert seqs == [row["seq"] for row in api_rows]
    assert probabilities == [row["probability"] for row in api_rows]
    shot(page, "job-audit-page-2")


def test_the_jobs_list_filters_like_the_api(page, http, finished_job) -> None:
    page.goto("/ui/jobs")
    assert int(page.inner_text("[data-testid=total]")) == http.get("/jobs").json()["total"]
    page.select_option("select[name=attack]", "heuristic")
    page.click(".filters button[type=submit]")
    page.wait_for_url("**attack=heuristic**")
    listed = page.eval_on_selector_all("[data-testid=jobs] tbody tr", "rows => rows.map(r => r.dataset.job)")
    assert finished_job["id"] in listed
    assert listed == [j["id"] for j in http.get("/jobs", params={"attack": "heuristic"}).json()["items"]]
    shot(page, "jobs-list")


def test_a_campaigns_page_shows_its_report_and_plots(page, http) -> None:
    body = {"model": "mini_c3d", "attacks": [{"name": "nes_pgd", "params": {}},
                                             {"name": "opt", "params": {"initial_directions": 3}}],
            "goal": "untargeted", "max_queries": 60,
            "clips": {"set": "attack_set", "per_class": 1, "limit": 2}}
    response = http.post("/campaigns", json=body)
    assert response.status_code == 202, response.text
    campaign_id = response.json()["id"]
    wait_campaign(http, campaign_id)
    report = http.get(f"/campaigns/{campaign_id}/report").json()

    page.goto(f"/ui/campaigns/{campaign_id}")
    assert page.locator(".plots svg").count() == 2 and images_loaded(page) == []
    for row in report["attacks"]:
        for column, value in row.items():
            cells = page.locator(f"tr[data-attack='{row['attack']}'] td[data-column={column}]")
            if cells.count() == 0:
                continue  # the success curves are drawn, not tabulated
            shown = cells.get_attribute("data-value")
            assert (shown == "" and value is None) or shown == str(value) or float(shown) == value, column
            assert cells.inner_text() == number(value), column
    assert page.locator("[data-testid=campaign-jobs] tbody tr").count() == 4
    shot(page, "campaign")


def test_a_job_submitted_through_the_form_runs_while_the_page_follows_it(page, http) -> None:
    before = http.get("/jobs").json()["total"]
    page.goto("/ui/submit")
    page.set_input_files("input[name=video]", str(SAMPLE_NPY))
    page.select_option("#attack", "nes_pgd")
    page.fill("input[name=max_queries]", "400")
    page.fill(".params[data-attack=nes_pgd] [data-param=epsilon]", "0.06")
    page.fill(".params[data-attack=nes_pgd] [data-param=seed]", "3")
    shot(page, "submit-form")
    page.click("#submit-form button[type=submit]")
    page.wait_for_url("**/ui/jobs/*")
    job_id = page.url.rsplit("/", 1)[-1]

    seen = set()
    deadline = time.monotonic() + 600
    while True:  # the page polls and updates itself; it reloads once the job has ended
        status = page.get_attribute("#progress [data-field=live-status]", "data-value") or \
            page.inner_text("#progress [data-field=live-status]")
        seen.add(status)
        if status in TERMINAL and page.locator("#frames").count():
            break
        assert time.monotonic() < deadline, f"the page never showed the end of job {job_id}: saw {seen}"
        page.wait_for_timeout(300)
    job = http.get(f"/jobs/{job_id}").json()
    assert http.get("/jobs").json()["total"] == before + 1
    assert (job["params"]["epsilon"] == 0.06 and job["params"]["seed"] == 3
            and job["progress"]["max_queries"] == 400)
    assert page.inner_text("[data-testid=status]") == job["status"].replace("_", " ")
    assert (int(page.get_attribute("#progress [data-field=queries_used]", "data-value"))
            == job["progress"]["queries_used"])
    assert images_loaded(page) == []
    shot(page, "submitted-job")


def test_a_refused_form_says_why_and_stores_nothing(page, http) -> None:
    before = http.get("/jobs").json()["total"]
    page.goto("/ui/submit")
    page.set_input_files("input[name=video]", str(SAMPLE_NPY))
    page.fill(".params[data-attack=nes_pgd] [data-param=epsilon]", "7")  # above the schema's maximum
    page.evaluate("document.querySelector('.params[data-attack=nes_pgd] [data-param=epsilon]')"
                  ".removeAttribute('max')")
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector("[data-testid=error]")
    assert "epsilon" in page.inner_text("[data-testid=error]")
    assert page.input_value(".params[data-attack=nes_pgd] [data-param=epsilon]") == "7"  # put back to fix
    assert http.get("/jobs").json()["total"] == before
    shot(page, "submit-refused")


def test_the_submit_form_works_without_javascript(browser, api, key, http) -> None:
    """With scripts off, the server gathers the chosen attack's parameter inputs itself."""
    context = browser.new_context(base_url=api, java_script_enabled=False)
    tab = context.new_page()
    tab.goto("/ui/login")
    tab.fill("input[name=key]", key)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/ui/jobs")
    tab.goto("/ui/submit?attack=opt")
    assert tab.is_visible(".params[data-attack=opt]") and not tab.is_visible(".params[data-attack=vbad]")
    tab.set_input_files("input[name=video]", str(SAMPLE_NPY))
    tab.fill("input[name=max_queries]", "300")
    tab.fill(".params[data-attack=opt] [data-param=initial_directions]", "4")
    tab.click("#submit-form button[type=submit]")
    tab.wait_for_url("**/ui/jobs/*")
    job_id = tab.url.rsplit("/", 1)[-1]
    context.close()
    job = http.get(f"/jobs/{job_id}").json()
    http.delete(f"/jobs/{job_id}")  # 202, or 409 if it has already ended: either way it is not left running
    assert job["attack"] == "opt" and job["params"]["initial_directions"] == 4
    assert job["progress"]["max_queries"] == 300


def test_another_keys_pages_are_not_found(browser, api, make_key, finished_job) -> None:
    context = browser.new_context(base_url=api)
    tab = context.new_page()
    tab.goto("/ui/login")
    tab.fill("input[name=key]", make_key("stranger"))
    tab.click("button[type=submit]")
    tab.wait_for_url("**/ui/jobs")
    assert finished_job["id"][:8] not in tab.inner_text("main")
    response = tab.goto(f"/ui/jobs/{finished_job['id']}")
    assert response.status == 404 and "no job" in tab.inner_text("[data-testid=error]")
    context.close()


def test_the_chart_data_is_the_audit_log(http, finished_job, api, key) -> None:
    import httpx

    with httpx.Client(base_url=api, cookies={"vaas_key": key}) as browser_like:
        live = browser_like.get(f"/ui/jobs/{finished_job['id']}/live.json").json()
    rows = http.get(f"/jobs/{finished_job['id']}/queries", params={"limit": 500}).json()["items"]
    assert [[p[0], p[1]] for p in live["points"]] == [[r["seq"], r["probability"]] for r in rows]
    assert json.dumps(live["points"][0][2]) == '"source"'
