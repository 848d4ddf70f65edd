"""The `vaas` CLI drives a job from submit to download against the real stack (HTTP only)."""
from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from client.cli import main
from tests.conftest import SAMPLE_NPY, TERMINAL


def _vaas(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_cli_submit_wait_status_download_queries(api, make_key, tmp_path, capsys):
    cfg = ["--url", api, "--key", make_key("cli")]

    code, out = _vaas(capsys, *cfg, "submit", str(SAMPLE_NPY), "--attack", "nes_pgd", "--model", "mini_c3d",
                      "--max-queries", "60")
    assert code == 0
    job_id = out.strip()
    assert job_id and "\n" not in job_id

    code, out = _vaas(capsys, *cfg, "wait", job_id, "--interval", "0.5", "--timeout", "600", "--no-progress")
    _, raw = _vaas(capsys, *cfg, "status", job_id, "--json")
    job = json.loads(raw)
    assert job["status"] in TERMINAL
    assert code == (0 if job["status"] == "succeeded" else 3)
    assert f"status    {job['status']}" in out

    code, out = _vaas(capsys, *cfg, "status", job_id)
    assert code == 0
    assert job_id in out and f"{job['progress']['queries_used']}/60 queries" in out
    assert "MAP" in out and "L∞" in out

    adv_path = tmp_path / "adv.npy"
    code, out = _vaas(capsys, *cfg, "download", job_id, "-o", str(adv_path))
    assert code == 0 and out.startswith(f"saved {adv_path}")
    clip = np.load(adv_path, allow_pickle=False)
    assert clip.dtype == np.uint8 and clip.shape == (16, 112, 112, 3)

    rows, offset = [], 0
    while True:
        code, raw = _vaas(capsys, *cfg, "queries", job_id, "--format", "json", "--limit", "100",
                          "--offset", str(offset))
        assert code == 0
        page = json.loads(raw)
        rows += page["items"]
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            break
    last_answered = [row for row in rows if row["status"] == "answered"][-1]
    assert hashlib.sha256(np.ascontiguousarray(clip).tobytes()).hexdigest() == last_answered["clip_sha256"]

    csv_path = tmp_path / "queries.csv"
    code, _ = _vaas(capsys, *cfg, "queries", job_id, "--format", "csv", "-o", str(csv_path))
    assert code == 0
    with csv_path.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == job["progress"]["queries_used"] == len(rows)
    assert [int(row["seq"]) for row in table] == list(range(len(table)))


def test_installed_vaas_script_runs():
    script = Path(sys.executable).parent / "vaas"
    result = subprocess.run([str(script), "--help"], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: vaas" in result.stdout and "submit" in result.stdout
