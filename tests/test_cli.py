"""The `vaas` CLI against a fake API (httpx.MockTransport): parsing, requests sent, output, exit codes.

No network and no stack: every test runs in milliseconds.
"""
from __future__ import annotations

import email.parser
import email.policy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.cli import main, metrics_summary
from client.http import VaasClient, VaasError

URL = "http://vaas.test"
KEY = "vaas_" + "k" * 32
JOB_ID = "job0123456789"
ROOT = Path(__file__).resolve().parent.parent

Handler = Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """Routes (method, path) to canned answers and records every request it gets."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Handler]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *answers: Any, status: int = 200) -> None:
        """Each answer is a JSON body, bytes, or a handler; the last one repeats."""
        handlers = []
        for answer in answers:
            if callable(answer):
                handlers.append(answer)
            elif isinstance(answer, bytes):
                handlers.append(lambda _r, a=answer: httpx.Response(status, content=a))
            else:
                handlers.append(lambda _r, a=answer: httpx.Response(status, json=a))
        self.routes[(method, path)] = handlers

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        handlers = self.routes.get((request.method, request.url.path))
        if not handlers:
            return httpx.Response(404, json={"detail": f"no endpoint at {request.url.path}"})
        return handlers.pop(0)(request) if len(handlers) > 1 else handlers[0](request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


@pytest.fixture
def fake() -> FakeApi:
    return FakeApi()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAAS_URL", raising=False)
    monkeypatch.delenv("VAAS_API_KEY", raising=False)


def run(fake: FakeApi, *argv: str, key: str | None = KEY) -> int:
    prefix = ["--url", URL] + (["--key", key] if key else [])
    return main([*prefix, *argv], transport=httpx.MockTransport(fake))


def form_fields(request: httpx.Request) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """A multipart body as (text fields, files: name → (filename, bytes))."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.content)
    fields, files = {}, {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, payload)
        else:
            fields[name] = payload.decode()
    return fields, files


def job(status: str = "queued", used: int = 1, budget: int = 60, **extra: Any) -> dict[str, Any]:
    body = {
        "id": JOB_ID, "kind": "attack", "status": status, "attack": "nes_pgd", "model": "mini_c3d",
        "goal": "untargeted", "target_label": None, "source_label": 3, "source_label_name": "wave",
        "source_probability": 0.91, "params": {"epsilon": 0.05},
        "progress": {"queries_used": used, "max_queries": budget, "fraction": used / budget,
                     "best_score": -0.2},
        "metrics": None, "error": None, "created_at": "2025-01-02T03:04:05.123456Z", "started_at": None,
        "finished_at": None,
        "links": {"self": f"/jobs/{JOB_ID}", "adversarial_npy": None, "adversarial_mkv": None,
                  "queries": f"/jobs/{JOB_ID}/queries"},
    }
    body.update(extra)
    return body


FINISHED_METRICS = {"success": False, "map": 1.234, "linf": 12, "sparsity": 0.05, "queries": 60,
                    "final_label": 3, "final_label_name": "wave", "final_probability": 0.6,
                    "wall_time_s": 4.2}


def campaign(status: str = "queued", finished: int = 0, jobs: int = 2) -> dict[str, Any]:
    return {
        "id": "camp42", "model": "mini_c3d", "status": status, "goal": "untargeted", "target_rule": None,
        "max_queries": 100, "attacks": [{"name": "nes_pgd", "params": {}}, {"name": "opt", "params": {}}],
        "clips": {"set": "attack_set", "per_class": 1},
        "progress": {"jobs": jobs, "finished": finished, "succeeded": 1, "queries_used": 50 * finished,
                     "max_queries": 100 * jobs},
        "jobs": [{"id": "j1", "attack": "nes_pgd", "clip_index": 0, "target_label": None,
                  "status": "succeeded"},
                 {"id": "j2", "attack": "opt", "clip_index": 0, "target_label": None, "status": "running"}],
        "links": {"self": "/campaigns/camp42", "report": "/campaigns/camp42/report"},
    }


# ====================================================================================== config & errors
def test_missing_key_is_a_usage_error_with_advice(fake, capsys):
    assert run(fake, "jobs", key=None) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaas: error: no API key")
    assert "--key" in err and "VAAS_API_KEY" in err
    assert fake.requests == []


def test_url_and_key_come_from_the_environment(fake, monkeypatch, capsys):
    monkeypatch.setenv("VAAS_URL", "gpu-box:9000/")
    monkeypatch.setenv("VAAS_API_KEY", KEY)
    fake.on("GET", "/jobs", {"items": [], "total": 0, "limit": 50, "offset": 0})
    assert main(["jobs"], transport=httpx.MockTransport(fake)) == 0
    request = fake.last
    assert str(request.url) == "http://gpu-box:9000/jobs"
    assert request.headers["x-api-key"] == KEY
    assert "no jobs" in capsys.readouterr().out


def test_flags_override_the_environment(fake, monkeypatch):
    monkeypatch.setenv("VAAS_URL", "http://elsewhere:1")
    monkeypatch.setenv("VAAS_API_KEY", "vaas_env")
    fake.on("GET", "/attacks", [])
    assert run(fake, "attacks") == 0
    assert fake.last.url.host == "vaas.test" and fake.last.headers["x-api-key"] == KEY


def test_api_error_detail_goes_to_stderr_with_exit_1(fake, capsys):
    fake.on("GET", f"/jobs/{JOB_ID}", {"detail": f"no job {JOB_ID} for this API key"}, status=404)
    assert run(fake, "status", JOB_ID) == 1
    captured = capsys.readouterr()
    assert captured.err == f"vaas: error: no job {JOB_ID} for this API key\n"
    assert captured.out == ""


def test_non_json_error_body_is_described(fake, capsys):
    fake.on("GET", "/models", b"upstream timed out", status=502)
    assert run(fake, "models") == 1
    assert capsys.readouterr().err.strip() == "vaas: error: HTTP 502 Bad Gateway: upstream timed out"


def test_unreachable_api_is_exit_1(capsys):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    assert main(["--url", URL, "--key", KEY, "jobs"], transport=httpx.MockTransport(refuse)) == 1
    assert "cannot reach the VAAS API at http://vaas.test" in capsys.readouterr().err


def test_usage_errors_exit_2(fake, capsys):
    assert run(fake, "frobnicate") == 2
    assert "invalid choice" in capsys.readouterr().err
    assert run(fake, "submit", "clip.npy", "--attack", "nes_pgd") == 2  # --max-queries missing
    assert "--max-queries" in capsys.readouterr().err
    assert run(fake, "submit", "clip.npy", "--attack", "x", "--max-queries", "0") == 2
    assert run(fake, "jobs", "--status", "nope") == 2
    assert fake.requests == []


def _all_commands() -> list[list[str]]:
    groups = {"policy": ["pretrain", "list", "status", "download"],
              "campaign": ["create", "status", "wait", "cancel", "list", "report"]}
    singles = ["health", "attacks", "models", "submit", "status", "wait", "cancel", "download", "queries",
               "jobs", "report"]
    return ([[]] + [[c] for c in singles] + [[g] for g in groups]
            + [[g, c] for g, cs in groups.items() for c in cs])


@pytest.mark.parametrize("command", _all_commands(), ids=lambda c: " ".join(c) or "vaas")
def test_every_command_has_help_with_examples(command, capsys):
    assert main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: vaas")
    assert "examples:" in text


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("vaas ")


def test_client_never_imports_the_server_packages():
    code = ("import sys, client.cli, client.http; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'api', 'db', 'worker', 'core', "
            "'model_server'}); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ====================================================================================== catalog
ATTACKS = [
    {"name": "nes_pgd", "description": "Dense NES + PGD. Ilyas et al.", "parameters": {
        "properties": {"epsilon": {"type": "number", "default": 0.05, "description": "L∞ bound"},
                       "mode": {"enum": ["a", "b"], "default": "a"},
                       "policy": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}}}},
    {"name": "opt", "description": "OPT boundary attack.", "parameters": {"properties": {}}},
]
MODELS = [{"name": "mini_c3d", "labels": ["wave", "clap", "jump"], "max_clips": 64,
           "input": {"frames": 16, "height": 112, "width": 112, "channels": 3, "dtype": "uint8",
                     "layout": "THWC"}}]


def test_attacks_table_and_json(fake, capsys):
    fake.on("GET", "/attacks", ATTACKS)
    assert run(fake, "attacks") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["ATTACK", "DESCRIPTION"]
    assert "nes_pgd  Dense NES + PGD." in out and "opt" in out
    assert run(fake, "--json", "attacks") == 0
    assert json.loads(capsys.readouterr().out) == ATTACKS
    assert run(fake, "attacks", "--json") == 0  # the flag after the command too
    assert json.loads(capsys.readouterr().out) == ATTACKS


def test_one_attack_shows_its_parameters(fake, capsys):
    fake.on("GET", "/attacks", ATTACKS)
    assert run(fake, "attacks", "nes_pgd") == 0
    out = capsys.readouterr().out
    assert "epsilon" in out and "0.05" in out and "a|b" in out and "string|null" in out
    assert run(fake, "attacks", "nope") == 1
    assert "no attack 'nope'" in capsys.readouterr().err


def test_models_list_and_labels(fake, capsys):
    fake.on("GET", "/models", MODELS)
    assert run(fake, "models") == 0
    out = capsys.readouterr().out
    assert "mini_c3d" in out and "16×112×112×3 uint8" in out and "wave, clap, jump" in out
    assert run(fake, "models", "mini_c3d") == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split() == ["2", "jump"] for line in lines)


def test_health_needs_no_key_and_reports_degraded(fake, capsys):
    fake.on("GET", "/healthz", {"status": "degraded", "components": {
        "database": {"ok": True, "detail": "SELECT 1 answered"},
        "oracle": {"ok": False, "detail": "TorchServe did not answer"}}}, status=503)
    assert run(fake, "health", key=None) == 1
    out = capsys.readouterr().out
    assert "degraded" in out and "DOWN" in out
    assert "x-api-key" not in fake.last.headers


# ====================================================================================== jobs
@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.npy"
    path.write_bytes(b"\x93NUMPY fake clip bytes")
    return path


def test_submit_sends_the_form_and_prints_the_id(fake, clip, capsys):
    fake.on("POST", "/jobs", job(), status=202)
    code = run(fake, "submit", str(clip), "--attack", "nes_pgd", "--model", "mini_c3d", "--max-queries", "60",
               "--params", '{"epsilon": 0.03}')
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out == f"{JOB_ID}\n"
    assert "queued" in captured.err and f"vaas wait {JOB_ID}" in captured.err
    request = fake.last
    assert request.method == "POST" and request.url.path == "/jobs"
    fields, files = form_fields(request)
    assert fields == {"max_queries": "60", "attack": "nes_pgd", "model": "mini_c3d", "goal": "untargeted",
                      "params": '{"epsilon": 0.03}'}
    assert files == {"video": ("clip.npy", clip.read_bytes())}


def test_submit_target_implies_targeted_and_params_from_file(fake, clip, tmp_path):
    (tmp_path / "p.json").write_text('{"epsilon": 0.02, "samples": 10}')
    fake.on("POST", "/jobs", job(), status=202)
    assert run(fake, "submit", str(clip), "--attack", "vbad", "--target", "2", "--max-queries", "500",
               "--params", f"@{tmp_path / 'p.json'}") == 0
    fields, _ = form_fields(fake.last)
    assert fields["goal"] == "targeted" and fields["target_label"] == "2"
    assert json.loads(fields["params"]) == {"epsilon": 0.02, "samples": 10}
    assert "model" not in fields  # the server's default


@pytest.mark.parametrize("extra, message", [
    (["--params", "{epsilon: 1}"], "--params is not valid JSON"),
    (["--params", "[1, 2]"], "--params must be a JSON object"),
    (["--params", "@/no/such/file.json"], "cannot read"),
    (["--goal", "targeted"], "--goal targeted needs --target"),
    (["--goal", "untargeted", "--target", "1"], "--target is only used with --goal targeted"),
])
def test_submit_refuses_bad_input_locally(fake, clip, capsys, extra, message):
    assert run(fake, "submit", str(clip), "--attack", "nes_pgd", "--max-queries", "60", *extra) == 2
    assert message in capsys.readouterr().err
    assert fake.requests == []


def test_submit_missing_video_is_an_error(fake, tmp_path, capsys):
    assert run(fake, "submit", str(tmp_path / "none.mp4"), "--attack", "nes_pgd", "--max-queries", "60") == 1
    assert "no such video file" in capsys.readouterr().err
    assert fake.requests == []


def test_submit_422_detail_is_shown(fake, clip, capsys):
    fake.on("POST", "/jobs", {"detail": "unknown attack 'nope'; choose one of nes_pgd, opt"}, status=422)
    assert run(fake, "submit", str(clip), "--attack", "nope", "--max-queries", "60") == 1
    assert capsys.readouterr().err == "vaas: error: unknown attack 'nope'; choose one of nes_pgd, opt\n"


@pytest.mark.parametrize("final, code", [("succeeded", 0), ("budget_exhausted", 3), ("error", 3)])
def test_submit_wait_polls_until_terminal(fake, clip, capsys, final, code):
    fake.on("POST", "/jobs", job(), status=202)
    fake.on("GET", f"/jobs/{JOB_ID}", job("running", 20), job("running", 40),
            job(final, 60, metrics=FINISHED_METRICS, finished_at="2025-01-02T03:05:00Z"))
    assert run(fake, "submit", str(clip), "--attack", "nes_pgd", "--max-queries", "60", "--wait",
               "--interval", "0") == code
    out = capsys.readouterr().out
    assert out.startswith(f"{JOB_ID}\n")
    assert f"status    {final}" in out
    assert [r.method for r in fake.requests] == ["POST", "GET", "GET", "GET"]


def test_wait_exit_codes_and_json(fake, capsys):
    fake.on("GET", f"/jobs/{JOB_ID}", job("succeeded", 33, metrics=FINISHED_METRICS | {"success": True}))
    assert run(fake, "wait", JOB_ID, "--interval", "0") == 0
    assert "goal met" in capsys.readouterr().out
    fake.on("GET", f"/jobs/{JOB_ID}", job("cancelled", 10))
    assert run(fake, "wait", JOB_ID, "--json") == 3
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"


def test_wait_shows_a_progress_bar(fake, capsys):
    fake.on("GET", f"/jobs/{JOB_ID}", job("running", 30), job("budget_exhausted", 60))
    assert run(fake, "wait", JOB_ID, "--interval", "0", "--progress") == 3
    err = capsys.readouterr().err
    assert "60/60" in err and "status=budget_exhausted" in err and "best_score=-0.2" in err


def test_wait_timeout_is_exit_1(fake, capsys):
    fake.on("GET", f"/jobs/{JOB_ID}", job("running", 5))
    assert run(fake, "wait", JOB_ID, "--interval", "0", "--timeout", "0.05") == 1
    assert f"job {JOB_ID} is still running after 0.05 s" in capsys.readouterr().err


def test_wait_retries_transient_failures(fake, capsys, monkeypatch):
    monkeypatch.setattr("client.cli.time.sleep", lambda _s: None)
    fake.on("GET", f"/jobs/{JOB_ID}",
            lambda r: httpx.Response(503, json={"detail": "the database is unreachable"}),
            job("succeeded", 9))
    assert run(fake, "wait", JOB_ID) == 0
    assert "retrying" in capsys.readouterr().err
    fake.on("GET", f"/jobs/{JOB_ID}", {"detail": "no job"}, status=404)  # not transient: fails at once
    assert run(fake, "wait", JOB_ID) == 1


def test_status_shows_progress_and_metrics(fake, capsys):
    fake.on("GET", f"/jobs/{JOB_ID}", job(
        "budget_exhausted", 60, metrics=FINISHED_METRICS, finished_at="2025-01-02T03:05:00Z",
        links={"self": "", "adversarial_npy": "x", "adversarial_mkv": "y", "queries": ""}))
    assert run(fake, "status", JOB_ID) == 0
    out = capsys.readouterr().out
    assert "status    budget_exhausted" in out
    assert "60/60 queries (100.0%)" in out
    assert "goal not met" in out and "MAP 1.234" in out and "L∞ 12" in out and "queries 60" in out
    assert "clean     label 3 (wave), p=0.91" in out
    assert "npy, mkv" in out
    assert fake.last.method == "GET" and fake.last.url.path == f"/jobs/{JOB_ID}"


def test_cancel_sends_delete(fake, capsys):
    fake.on("DELETE", f"/jobs/{JOB_ID}", job("cancelled"), status=202)
    assert run(fake, "cancel", JOB_ID) == 0
    assert capsys.readouterr().out == f"job {JOB_ID} cancelled\n"
    fake.on("DELETE", f"/jobs/{JOB_ID}", {"detail": f"job {JOB_ID} has already ended"}, status=409)
    assert run(fake, "cancel", JOB_ID) == 1
    assert "has already ended" in capsys.readouterr().err


def test_download_streams_to_the_default_name(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    payload = bytes(range(256)) * 1000
    fake.on("GET", f"/jobs/{JOB_ID}/adversarial", payload)
    assert run(fake, "download", JOB_ID, "--format", "mkv") == 0
    assert fake.last.url.params["format"] == "mkv"
    assert (tmp_path / f"{JOB_ID}-adversarial.mkv").read_bytes() == payload
    assert capsys.readouterr().out == f"saved {JOB_ID}-adversarial.mkv (250.0 KiB)\n"
    target = tmp_path / "out"
    target.mkdir()
    assert run(fake, "download", JOB_ID, "-o", str(target)) == 0  # a folder: default name inside
    assert fake.last.url.params["format"] == "npy"
    assert (target / f"{JOB_ID}-adversarial.npy").read_bytes() == payload
    capsys.readouterr()
    assert run(fake, "download", JOB_ID, "-o", "x.npy", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"path": "x.npy", "bytes": len(payload)}
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{JOB_ID}-adversarial.mkv", "out", "x.npy"]


def test_download_to_stdout(fake, capsysbinary):
    fake.on("GET", f"/jobs/{JOB_ID}/adversarial", b"\x00\x01binary")
    assert run(fake, "download", JOB_ID, "-o", "-") == 0
    assert capsysbinary.readouterr().out == b"\x00\x01binary"


def test_download_not_ready_leaves_no_file(fake, tmp_path, capsys):
    fake.on("GET", f"/jobs/{JOB_ID}/adversarial", {"detail": "not ready: job is running"}, status=409)
    assert run(fake, "download", JOB_ID, "-o", str(tmp_path / "adv.npy")) == 1
    assert capsys.readouterr().err == "vaas: error: not ready: job is running\n"
    assert list(tmp_path.iterdir()) == []


QUERY_ROW = {"seq": 0, "batch_id": 0, "clip_sha256": "ab" * 32, "status": "answered", "label": 3,
             "label_name": "wave", "probability": 0.91, "latency_ms": 12.5, "error": None,
             "created_at": "2025-01-02T03:04:05Z", "answered_at": "2025-01-02T03:04:05Z"}


def test_queries_page_as_table_and_json(fake, capsys):
    page = {"items": [QUERY_ROW, QUERY_ROW | {"seq": 1}], "total": 60, "limit": 2, "offset": 10}
    fake.on("GET", f"/jobs/{JOB_ID}/queries", page)
    assert run(fake, "queries", JOB_ID, "--limit", "2", "--offset", "10") == 0
    assert dict(fake.last.url.params) == {"limit": "2", "offset": "10"}
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split()[:3] == ["SEQ", "BATCH", "STATUS"] and len(lines) == 3
    assert "abababab" in lines[1]
    assert "showing 11–12 of 60" in captured.err
    assert run(fake, "queries", JOB_ID, "--format", "json") == 0
    assert json.loads(capsys.readouterr().out) == page
    assert dict(fake.last.url.params) == {}


def test_queries_csv_and_jsonl_stream_the_whole_log(fake, tmp_path, capsysbinary):
    csv_body = b"seq,batch_id\n0,0\n1,1\n"
    fake.on("GET", f"/jobs/{JOB_ID}/queries",
            lambda r: httpx.Response(
                200, content=csv_body if r.url.params["format"] == "csv" else b'{"seq":0}\n'))
    assert run(fake, "queries", JOB_ID, "--format", "csv", "-o", str(tmp_path / "q.csv")) == 0
    assert dict(fake.last.url.params) == {"format": "csv"}
    assert (tmp_path / "q.csv").read_bytes() == csv_body
    capsysbinary.readouterr()
    assert run(fake, "queries", JOB_ID, "--format", "jsonl") == 0
    assert capsysbinary.readouterr().out == b'{"seq":0}\n'


def test_jobs_list_with_filters(fake, capsys):
    page = {"items": [job("running", 10), job("succeeded", 60, id="other")], "total": 7, "limit": 2,
            "offset": 0}
    fake.on("GET", "/jobs", page)
    assert run(fake, "jobs", "--status", "running", "--limit", "2") == 0
    assert dict(fake.last.url.params) == {"status": "running", "limit": "2"}
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "ATTACK", "MODEL", "GOAL", "QUERIES", "BEST", "CREATED"]
    assert lines[1].split()[:6] == [JOB_ID, "running", "nes_pgd", "mini_c3d", "untargeted", "10/60"]
    assert "2025-01-02 03:04:05" in lines[1]
    assert "of 7" in captured.err


# ====================================================================================== policies
def policy(status: str = "queued") -> dict[str, Any]:
    return {"id": "pol1", "model": "mini_c3d", "goal": "untargeted", "status": status,
            "params": {"iterations": 2},
            "progress": {"queries_used": 0, "max_queries": 900, "fraction": 0.0, "best_score": None},
            "report": ({"iterations": 2, "mean_reward": [0.1, 0.4], "queries": 880}
                       if status == "succeeded" else None),
            "error": None, "created_at": "2025-01-02T03:04:05Z", "started_at": None, "finished_at": None,
            "links": {"self": "/policies/pol1",
                      "weights": "/policies/pol1/weights" if status == "succeeded" else None,
                      "queries": "/jobs/pol1/queries"}}


def test_policy_pretrain_sends_json(fake, capsys):
    fake.on("POST", "/policies", policy(), status=202)
    assert run(fake, "policy", "pretrain", "--model", "mini_c3d", "--max-queries", "900",
               "--params", '{"iterations": 2}') == 0
    assert json.loads(fake.last.content) == {"model": "mini_c3d", "goal": "untargeted", "max_queries": 900,
                                             "params": {"iterations": 2}}
    assert fake.last.headers["content-type"] == "application/json"
    assert capsys.readouterr().out == "pol1\n"


def test_policy_list_status_download(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fake.on("GET", "/policies", {"items": [policy("succeeded")], "total": 1, "limit": 50, "offset": 0})
    assert run(fake, "policy", "list", "--model", "mini_c3d") == 0
    assert dict(fake.last.url.params) == {"model": "mini_c3d"}
    assert capsys.readouterr().out.splitlines()[1].split()[:6] == ["pol1", "succeeded", "mini_c3d",
                                                                    "untargeted", "0/900", "yes"]
    fake.on("GET", "/policies/pol1", policy("succeeded"))
    assert run(fake, "policy", "status", "pol1") == 0
    out = capsys.readouterr().out
    assert "mean_reward 0.4 (last of 2)" in out and "vaas policy download pol1" in out
    fake.on("GET", "/policies/pol1/weights", b"torch-bytes")
    assert run(fake, "policy", "download", "pol1") == 0
    assert (tmp_path / "pol1-rlsb-policy.pt").read_bytes() == b"torch-bytes"


# ====================================================================================== campaigns
def test_campaign_create_sends_the_contract_body(fake, capsys):
    fake.on("POST", "/campaigns", campaign(), status=202)
    assert run(fake, "campaign", "create", "--model", "mini_c3d", "--attack", "nes_pgd",
               "--attack", 'opt:{"alpha": 0.2}', "--max-queries", "100") == 0
    assert fake.last.method == "POST" and fake.last.url.path == "/campaigns"
    assert json.loads(fake.last.content) == {
        "model": "mini_c3d",
        "attacks": [{"name": "nes_pgd", "params": {}}, {"name": "opt", "params": {"alpha": 0.2}}],
        "goal": "untargeted", "max_queries": 100,  # no target_rule (untargeted), clips: the server's default
    }
    captured = capsys.readouterr()
    assert captured.out == "camp42\n" and "vaas campaign wait camp42" in captured.err


def test_campaign_create_clip_options(fake):
    fake.on("POST", "/campaigns", campaign(), status=202)
    assert run(fake, "campaign", "create", "--attack", "nes_pgd", "--max-queries", "100", "--set",
               "attack_set", "--per-class", "1", "--limit-clips", "3") == 0
    body = json.loads(fake.last.content)
    assert body["clips"] == {"set": "attack_set", "per_class": 1, "limit": 3}
    assert "model" not in body  # the server's default model


@pytest.mark.parametrize("rule, expected", [
    (None, {"kind": "next"}), ("random", {"kind": "random"}), ("random:7", {"kind": "random", "seed": 7}),
    ("fixed:3", {"kind": "fixed", "label": 3}), ("per_clip:1,0,2", {"kind": "per_clip", "labels": [1, 0, 2]}),
])
def test_campaign_targeted_rules(fake, rule, expected):
    fake.on("POST", "/campaigns", campaign(), status=202)
    extra = ["--target-rule", rule] if rule else []
    assert run(fake, "campaign", "create", "--model", "m", "--attack", "vbad", "--goal", "targeted",
               "--max-queries", "5", "--per-class", "2", "--set", "other", *extra) == 0
    body = json.loads(fake.last.content)
    assert body["goal"] == "targeted" and body["target_rule"] == expected
    assert body["clips"] == {"set": "other", "per_class": 2}


@pytest.mark.parametrize("extra, message", [
    (["--attack", "nes_pgd", "--target-rule", "next"], "--target-rule is only used with --goal targeted"),
    (["--attack", "nes_pgd:{bad", "--goal", "untargeted"],
     "the params of --attack nes_pgd is not valid JSON"),
    (["--attack", ":{}"], "missing the attack name"),
    (["--attack", "x", "--goal", "targeted", "--target-rule", "fixed:a"], "--target-rule must be"),
])
def test_campaign_create_refuses_bad_options(fake, capsys, extra, message):
    assert run(fake, "campaign", "create", "--model", "m", "--max-queries", "5", *extra) == 2
    assert message in capsys.readouterr().err
    assert fake.requests == []


def test_campaign_create_needs_an_attack(fake, capsys):
    assert run(fake, "campaign", "create", "--model", "m", "--max-queries", "5") == 2
    assert "--attack" in capsys.readouterr().err


def test_campaign_status_list_cancel(fake, capsys):
    fake.on("GET", "/campaigns/camp42", campaign("running", 1))
    assert run(fake, "campaign", "status", "camp42") == 0
    out = capsys.readouterr().out
    assert "1/2 jobs ended, 1 succeeded; 50/200 queries" in out
    assert "nes_pgd, opt" in out and "attack_set, 1 per class" in out
    assert any(line.split() == ["j2", "opt", "0", "running"] for line in out.splitlines())
    fake.on("GET", "/campaigns", {"items": [campaign("running", 1)], "total": 1, "limit": 50, "offset": 0})
    assert run(fake, "campaign", "list") == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:7] == ["camp42", "running", "mini_c3d",
                                                                    "untargeted", "nes_pgd,opt", "1/2", "1"]
    fake.on("DELETE", "/campaigns/camp42", campaign("cancelled", 1), status=202)
    assert run(fake, "campaign", "cancel", "camp42") == 0
    assert fake.last.method == "DELETE"
    assert "campaign camp42 is cancelled" in capsys.readouterr().out


@pytest.mark.parametrize("final, code", [("finished", 0), ("succeeded", 0), ("cancelled", 3)])
def test_campaign_wait(fake, capsys, final, code):
    fake.on("GET", "/campaigns/camp42", campaign("running", 1), campaign(final, 2))
    assert run(fake, "campaign", "wait", "camp42", "--interval", "0", "--progress") == code
    captured = capsys.readouterr()
    assert "2/2" in captured.err and f"status={final}" in captured.err
    assert f"status    {final}" in captured.out


def test_campaign_create_wait(fake, capsys):
    fake.on("POST", "/campaigns", campaign(), status=202)
    fake.on("GET", "/campaigns/camp42", campaign("finished", 2))
    assert run(fake, "campaign", "create", "--model", "m", "--attack", "a", "--max-queries", "5", "--wait",
               "--interval", "0") == 0
    assert [r.method for r in fake.requests] == ["POST", "GET"]


# The shape of api/reports.py: per-attack rows under "attacks" (clips = that attack's jobs).
REPORT = {
    "campaign": "camp42", "model": "mini_c3d", "goal": "targeted",
    "target_rule": {"kind": "fixed", "label": 2},
    "max_queries": 2000, "complete": False, "jobs": 20, "finished": 19,
    "attacks": [
        {"attack": "nes_pgd", "clips": 10, "finished": 10, "successes": 7, "fooling_rate": 0.7,
         "queries_mean_successes": 1234.5, "queries_median_successes": 1100, "queries_mean_all": 1500.25,
         "queries_median_all": 1600, "map": 1.2345, "linf": 12.0, "sparsity": 0.01, "frames_perturbed": 16,
         "ssim": 0.99, "seconds_mean": 3.5, "queries_per_s": 400.0},
        {"attack": "opt", "clips": 10, "finished": 9, "successes": 0, "fooling_rate": 0.0,
         "queries_mean_successes": None, "queries_median_successes": None, "queries_mean_all": 2000,
         "queries_median_all": 2000, "map": 0.5, "linf": 40.0, "sparsity": 0.9, "frames_perturbed": 3,
         "ssim": 0.9, "seconds_mean": 9.0, "queries_per_s": 220.0},
    ],
    "success_curves": {"nes_pgd": [[0, 0.0], [2000, 0.7]], "opt": [[0, 0.0], [2000, 0.0]]},
}


def test_report_json_is_a_table_per_attack(fake, capsys):
    fake.on("GET", "/campaigns/camp42/report", REPORT)
    assert run(fake, "report", "camp42") == 0
    assert dict(fake.last.url.params) == {"format": "json"}
    out = capsys.readouterr().out
    assert ("target rule fixed:2" in out and "19/20 ended (in progress)" in out
            and "2000 queries per job" in out)
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("ATTACK"))
    assert "FR" in lines[header] and "SPARSITY" in lines[header]
    assert lines[header + 1].split() == ["nes_pgd", "10", "70.0%", "1234.5", "1100", "1500.2", "1.234", "12",
                                         "0.01"]
    assert lines[header + 2].split() == ["opt", "9/10", "0.0%", "-", "-", "2000", "0.5", "40", "0.9"]
    assert run(fake, "campaign", "report", "camp42", "--json") == 0
    assert json.loads(capsys.readouterr().out) == REPORT


def test_report_reads_nested_and_keyed_shapes(fake, capsys):
    nested = {"by_attack": {"sign_opt": {"jobs": 4, "succeeded": 1,
                                         "queries": {"successes": {"mean": 300, "median": 310},
                                                     "all": {"mean": 800}},
                                         "map": 0.25, "linf": 30, "sparsity": 0.5}}}
    fake.on("GET", "/campaigns/c/report", nested)
    assert run(fake, "report", "c") == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row == ["sign_opt", "4", "25.0%", "300", "310", "800", "0.25", "30", "0.5"]


def test_report_csv_and_html(fake, tmp_path, capsysbinary):
    fake.on("GET", "/campaigns/camp42/report",
            lambda r: httpx.Response(200, content=f"report as {r.url.params['format']}".encode()))
    assert run(fake, "report", "camp42", "--format", "csv", "-o", str(tmp_path / "r.csv")) == 0
    assert (tmp_path / "r.csv").read_text() == "report as csv"
    capsysbinary.readouterr()
    assert run(fake, "report", "camp42", "--format", "html") == 0
    assert capsysbinary.readouterr().out == b"report as html"


# ====================================================================================== VaasClient
def test_client_raises_vaas_error_with_status_and_detail():
    transport = httpx.MockTransport(lambda r: httpx.Response(401, json={"detail": "unknown API key"}))
    with VaasClient("http://x", "vaas_bad", transport=transport) as vaas, pytest.raises(VaasError) as caught:
        vaas.list_jobs()
    assert caught.value.status == 401 and caught.value.detail == "unknown API key"


def test_client_refuses_ids_that_leave_their_route():
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={}))
    with (VaasClient("http://x", "k", transport=transport) as vaas,
          pytest.raises(VaasError, match="invalid id")):
        vaas.get_job("../attacks")


def test_summary_says_when_the_label_was_reached_above_the_attacks_bound():
    summary = metrics_summary({"success": False, "label_met": True, "final_label": 7, "linf": 230})
    assert summary.startswith("goal not met (label reached, perturbation above the attack's bound)")
    assert metrics_summary({"success": False, "label_met": False}) == "goal not met"
