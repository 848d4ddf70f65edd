"""The pages' server side, driven with TestClient on SQLite and a fake oracle: signing in, privacy,
the submit form, error pages. (The browser tests in tests/test_pages_browser.py use the real stack.)"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from api.ui import COOKIE, ParamInput, number, param_input, safe_next
from db.models import Job
from tests.api.conftest import HEADER, count, stored_nothing, submit
from worker.attacks import ATTACKS

HTML = {"accept": "text/html"}


def sign_in(env, who: str = "alice"):
    client = env["client"]
    response = client.post("/ui/login", data={"key": env[who][HEADER], "next": "/ui/jobs"},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    return response


def test_pages_send_you_to_sign_in_and_back(env) -> None:
    response = env["client"].get("/ui/jobs?status=queued", headers=HTML, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstatus%3Dqueued"
    page = env["client"].get(response.headers["location"], headers=HTML)
    assert page.status_code == 200 and 'name="next" value="/ui/jobs?status=queued"' in page.text


def test_a_wrong_key_is_refused_with_advice(env) -> None:
    response = env["client"].post("/ui/login", data={"key": "vaas_" + "x" * 32, "next": ""})
    assert response.status_code == 401 and "unknown API key" in response.text
    assert COOKIE not in response.cookies


def test_the_key_cookie_is_a_locked_down_session_cookie(env) -> None:
    header = sign_in(env).headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=strict" in header and "path=/ui" in header
    assert "expires" not in header and "max-age" not in header  # gone when the browser closes


def test_a_cookie_never_authorises_the_json_api(env) -> None:
    sign_in(env)
    assert env["client"].get("/jobs").status_code == 401


def test_sign_in_only_returns_to_pages_of_this_site() -> None:
    assert safe_next("https://evil.example/x") == "/ui/jobs"
    assert safe_next("//evil.example/ui/x") == "/ui/jobs"
    assert safe_next("/ui/jobs/abc?log_offset=50") == "/ui/jobs/abc?log_offset=50"


def test_form_posts_from_another_site_are_refused(env) -> None:
    response = env["client"].post("/ui/login", data={"key": env["alice"][HEADER]},
                                  headers={"origin": "https://evil.example", **HTML})
    assert response.status_code == 403 and "another site" in response.text


def test_each_key_sees_only_its_jobs(env, clip_npy) -> None:
    mine = submit(env, clip_npy).json()["id"]
    theirs = submit(env, clip_npy, key="bob").json()["id"]
    sign_in(env)
    listing = env["client"].get("/ui/jobs", headers=HTML)
    assert mine[:8] in listing.text and theirs[:8] not in listing.text
    other = env["client"].get(f"/ui/jobs/{theirs}", headers=HTML)
    assert other.status_code == 404 and "<html" in other.text and f"no job {theirs}" in other.text
    assert env["client"].get(f"/ui/jobs/{theirs}/live.json").status_code == 404
    assert env["client"].get(f"/ui/jobs/{theirs}/download/input.npy").status_code == 404


def test_job_page_and_live_data_show_the_stored_numbers(env, clip_npy) -> None:
    job = submit(env, clip_npy).json()
    sign_in(env)
    page = env["client"].get(f"/ui/jobs/{job['id']}", headers=HTML).text
    assert f'data-field="queries_used" data-value="{job["progress"]["queries_used"]}"' in page
    assert 'data-seq="0"' in page  # the clean clip's query is the first audit row
    live = env["client"].get(f"/ui/jobs/{job['id']}/live.json").json()
    assert live["queries_used"] == 1 and live["points"] == [[0, 0.9, "source"]] and not live["terminal"]
    with env["sessions"]() as session:  # as a runner stores an attack's progress
        session.get(Job, job["id"]).best_distance = 4.25
        session.commit()
    assert 'data-field="best_distance" data-value="4.25"' in env["client"].get(
        f"/ui/jobs/{job['id']}", headers=HTML).text
    assert env["client"].get(f"/ui/jobs/{job['id']}/live.json").json()["best_distance"] == 4.25
    assert env["client"].get(f"/jobs/{job['id']}",
                             headers=env["alice"]).json()["progress"]["best_distance"] == 4.25
    download = env["client"].get(f"/ui/jobs/{job['id']}/download/input.npy")
    assert download.status_code == 200 and download.content[:6] == b"\x93NUMPY"


def test_the_submit_form_makes_the_same_job_as_the_api(env, clip_npy) -> None:
    sign_in(env)
    form = env["client"].get("/ui/submit", headers=HTML).text
    assert 'data-param="epsilon"' in form and 'data-attack="vbad"' in form
    response = env["client"].post(
        "/ui/jobs", follow_redirects=False,
        data={"model": "mini", "attack": "nes_pgd", "goal": "untargeted", "target_label": "",
              "max_queries": "50", "params": json.dumps({"epsilon": 0.03})},
        files={"video": ("clip.npy", clip_npy)})
    assert response.status_code == 303
    job_id = response.headers["location"].rsplit("/", 1)[-1]
    job = env["client"].get(f"/jobs/{job_id}", headers=env["alice"]).json()
    assert job["params"]["epsilon"] == 0.03 and job["progress"]["max_queries"] == 50


def post_form(env, clip_npy: bytes, headers: dict | None = None, **fields: str):
    """POST the submit form: nes_pgd, untargeted, 50 queries on `mini`, with `fields` on top."""
    data = {"model": "mini", "attack": "nes_pgd", "goal": "untargeted", "max_queries": "50", **fields}
    return env["client"].post("/ui/jobs", data=data, files={"video": ("clip.npy", clip_npy)}, headers=headers,
                              follow_redirects=False)


def test_the_submit_form_works_without_javascript(env, clip_npy) -> None:
    """The per-parameter inputs are gathered by the server; only the chosen attack's are enabled."""
    sign_in(env)
    form = env["client"].get("/ui/submit?attack=opt", headers=HTML).text
    assert 'name="param:opt:initial_directions"' in form
    assert re.search(r'name="param:vbad:epsilon"[^>]*disabled', form)  # not the chosen attack: not sent
    assert not re.search(r'name="param:opt:initial_directions"[^>]*disabled', form)
    response = post_form(env, clip_npy, target_label="", **{
        "param:nes_pgd:epsilon": "0.03", "param:nes_pgd:seed": "3", "param:nes_pgd:population": ""})
    assert response.status_code == 303, response.text
    job = env["client"].get(f"/jobs/{response.headers['location'].rsplit('/', 1)[-1]}",
                            headers=env["alice"]).json()
    assert job["params"]["epsilon"] == 0.03 and job["params"]["seed"] == 3
    assert job["params"]["population"] == ATTACKS["nes_pgd"].Params().population  # empty: the default


def test_a_refused_form_comes_back_with_its_parameters(env, clip_npy) -> None:
    sign_in(env)
    response = post_form(env, clip_npy, headers=HTML, **{"param:nes_pgd:epsilon": "7"})
    assert response.status_code == 422 and "epsilon" in response.text
    assert re.search(r'name="param:nes_pgd:epsilon" value="7"', response.text)
    assert stored_nothing(env) and count(env, Job) == 0


def test_a_refused_form_says_why_and_stores_nothing(env, clip_npy) -> None:
    sign_in(env)
    response = post_form(env, clip_npy, headers=HTML, goal="targeted", params="{}")
    assert (response.status_code == 422 and "target_label" in response.text
            and 'id="submit-form"' in response.text)
    assert stored_nothing(env) and count(env, Job) == 0


def test_sign_out_forgets_the_key(env) -> None:
    sign_in(env)
    response = env["client"].post("/ui/logout", follow_redirects=False)
    assert response.status_code == 303 and COOKIE in response.headers["set-cookie"]
    assert env["client"].get("/ui/jobs", follow_redirects=False).status_code == 303


# ------------------------------------------------------------------------------ pure helpers
@pytest.mark.parametrize(("schema", "kind", "default"), [
    ({"type": "integer", "default": 48, "minimum": 2}, "integer", "48"),
    ({"type": "number", "default": 0.05}, "number", "0.05"),
    ({"type": "boolean", "default": True}, "boolean", "true"),
    ({"type": "string", "enum": ["both", "none"], "default": "both"}, "choice", "both"),
    ({"anyOf": [{"type": "number"}, {"type": "null"}], "default": None}, "json", "null"),
    ({"type": "array", "items": {"type": "number"}, "default": [0.0, 1.0]}, "json", "[0.0, 1.0]"),
])
def test_form_inputs_follow_the_schema(schema: dict, kind: str, default: str) -> None:
    built = param_input("p", schema)
    assert isinstance(built, ParamInput) and built.kind == kind and built.default == default


def test_numbers_print_without_scientific_notation_for_large_values() -> None:
    assert (number(3165.2) == "3165" and number(31652.3) == "31,652" and number(0.12345678) == "0.1235"
            and number(None) == "—")
    assert number(12) == "12" and number(True) == "yes"


def test_every_attack_schema_becomes_a_form() -> None:
    from api.ui import param_inputs
    from worker.attacks import ATTACKS

    for cls in ATTACKS.values():
        schema = cls.Params.model_json_schema()
        inputs = param_inputs(schema)
        assert [i.name for i in inputs] == list(schema["properties"])  # in the order GET /attacks lists them
        assert set(schema["properties"]) == set(cls.Params.model_fields)


def test_visuals_of_a_two_frame_clip() -> None:
    from api import visuals

    clean = np.full((2, 4, 4, 3), 100, dtype=np.uint8)
    adversarial = clean.copy()
    adversarial[1, 0, 0] = [110, 100, 95]
    shown, gain = visuals.amplified_perturbation(adversarial, clean)
    assert gain == pytest.approx(12.7) and (shown[0] == visuals.GREY).all()
    assert tuple(shown[1, 0, 0]) == (255, 128, 64) and (shown[1, 1:] == visuals.GREY).all()
    assert visuals.per_frame_map(adversarial, clean) == [0.0, pytest.approx(15 / 48)]
    mask = visuals.mask_overlay(adversarial, clean)
    assert mask[1, 0, 0, 0] > mask[1, 0, 0, 1] and (mask[0] == mask[0, 0, 0]).all()
    assert visuals.strip(clean).shape == (4, 4 * 2 + visuals.GAP, 3)
    assert visuals.png(visuals.strip(shown))[:8] == b"\x89PNG\r\n\x1a\n"
    svg = visuals.frame_bars_svg([0.0, 0.3125])
    assert svg.count('class="frame-bar"') == 2 and 'data-value="0.3125"' in svg


def test_the_preview_is_a_playable_webm_of_every_frame() -> None:
    import io

    import av

    from api import visuals

    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    data = visuals.preview_webm(clean, clean)
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 5 and frames[0].width == (16 * 2 + 4) * visuals.PREVIEW_SCALE


def test_curve_sampling_keeps_at_most_the_asked_points() -> None:
    from api.visuals import stride_for

    assert stride_for(10, 600) == 1 and stride_for(15_000, 600) == 25 and len(range(0, 15_001, 25)) <= 601


def test_the_filter_form_treats_empty_selects_as_any(env, clip_npy) -> None:
    job_id = submit(env, clip_npy).json()["id"]
    sign_in(env)
    listing = env["client"].get("/ui/jobs?status=&attack=nes_pgd&model=&kind=", headers=HTML)
    assert listing.status_code == 200 and job_id[:8] in listing.text
    wrong = env["client"].get("/ui/jobs?status=done", headers=HTML)
    assert wrong.status_code == 422 and "status must be one of" in wrong.text
