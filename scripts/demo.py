"""`make demo`: one real attack through the real stack, end to end, over the REST API.

Starts what is missing (TorchServe with the default model, a Celery worker, the API), creates an API
key, uploads the bundled sample clip with the dense NES+PGD attack, follows the job's progress,
downloads the adversarial video in both lossless formats, checks it against the oracle once more and
prints a short report. It stops what it started unless --keep is given (then `make down` stops it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts import stack  # noqa: E402

TERMINAL = {"succeeded", "budget_exhausted", "failed", "cancelled", "error"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=ROOT / "samples" / "sample_clip.mkv")
    parser.add_argument("--attack", default="nes_pgd")
    parser.add_argument("--max-queries", type=int, default=10_000)
    parser.add_argument("--params", default="{}", help="attack parameters as JSON")
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    profile = stack.PROFILES["dev"]
    os.environ.update(stack.environment(profile, announce=False))
    started = stack.up("dev")
    try:
        return run_demo(args, f"http://127.0.0.1:{profile.api_port}")
    finally:
        if args.keep:
            print("\nThe stack keeps running (--keep): `make down` stops it.")
        else:
            stack.down("dev", tuple(started))


def run_demo(args: argparse.Namespace, api: str) -> int:
    import httpx
    import numpy as np
    from tqdm import tqdm

    from api.keys import create_key
    from core.settings import get_settings
    from core.video import clip_sha256, decode_lossless
    from db.session import session_scope
    from model_server.client import OracleHTTP

    with session_scope() as session:
        _, key = create_key(session, "demo")
    client = httpx.Client(base_url=api, headers={"X-API-Key": key}, timeout=120)
    began = time.monotonic()
    with args.video.open("rb") as video:
        response = client.post(
            "/jobs",
            files={"video": (args.video.name, video, "application/octet-stream")},
            data={"attack": args.attack, "goal": "untargeted", "max_queries": str(args.max_queries),
                  "params": args.params},
        )
    if response.status_code != 202:
        print(f"submission refused ({response.status_code}): {response.text}")
        return 1
    job = response.json()
    print(f"job {job['id']}: {job['attack']} on {job['model']}, clean prediction "
          f"{job['source_label_name']} ({job['source_probability']:.3f})")
    job = follow(client, job, tqdm)

    out = ROOT / "var" / "demo" / job["id"]
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for fmt in ("npy", "mkv"):
        download = client.get(f"/jobs/{job['id']}/adversarial", params={"format": fmt})
        download.raise_for_status()
        files[fmt] = out / f"adversarial.{fmt}"
        files[fmt].write_bytes(download.content)
    clips = {fmt: decode_lossless(path.read_bytes()) for fmt, path in files.items()}
    identical = bool(np.array_equal(clips["npy"], clips["mkv"]))

    last = client.get(f"/jobs/{job['id']}/queries",
                      params={"offset": max(job["progress"]["queries_used"] - 1, 0), "limit": 1}).json()
    audited = last["items"][-1]["clip_sha256"] == clip_sha256(clips["npy"]) if last["items"] else False

    settings = get_settings()
    oracle = OracleHTTP.from_settings(settings)
    recheck = oracle.predict(job["model"], clips["npy"][None])[0]
    oracle.close()
    # The demo's own key, for looking at the job's page with `--keep` (local dev files only).
    (out / "api_key.txt").write_text(key + "\n")
    files["page"] = f"{api}/ui/jobs/{job['id']} (sign in with the key in {out / 'api_key.txt'}; "\
                    "DEMO_ARGS=--keep leaves the stack up)"
    report(job, files, identical, audited, recheck, time.monotonic() - began)
    return 0 if job["status"] in TERMINAL - {"error"} else 1


def follow(client, job: dict, tqdm) -> dict:
    bar = tqdm(total=job["progress"]["max_queries"], unit="query", desc="attack")
    while job["status"] not in TERMINAL:
        time.sleep(1.0)
        job = client.get(f"/jobs/{job['id']}").json()
        bar.n = job["progress"]["queries_used"]
        best = job["progress"]["best_score"]
        bar.set_postfix(status=job["status"], best_score=f"{best:.3f}" if best is not None else "-")
        bar.refresh()
    bar.close()
    return job


def _attempts(attempts: int) -> str:
    if attempts <= 1:
        return str(attempts)
    return f"{attempts}: resumed from a checkpoint after a worker was lost, so not the queries of one run"


def report(job: dict, files: dict, identical: bool, audited: bool, recheck: dict, wall: float) -> None:
    metrics = job.get("metrics") or {}
    goal_met = recheck["label"] != job["source_label"]
    rows = [
        ("outcome", job["status"] + (f" — {job['error']}" if job.get("error") else "")),
        ("clean prediction", f"{job['source_label_name']} ({job['source_probability']:.3f})"),
        ("adversarial prediction", f"{recheck['label_name']} ({recheck['probability']:.3f}), "
                                   f"re-checked against the oracle: goal {'met' if goal_met else 'NOT met'}"),
        ("queries used", f"{job['progress']['queries_used']} of {job['progress']['max_queries']}"),
        ("attempts", _attempts(job.get("attempts", 1))),
        ("oracle kernels",
         f"{metrics.get('oracle_kernels')} (the query count repeats only on the same kernels)"),
        ("MAP (0-255)", f"{metrics.get('map', float('nan')):.3f}"),
        ("L∞ (levels of 255)", str(metrics.get("linf"))),
        ("frames perturbed", f"{metrics.get('frames_perturbed')} of {metrics.get('frames')}"),
        ("wall time", f"{wall:.1f} s (attack {metrics.get('wall_time_s')} s)"),
        ("npy == mkv, bit-exact", str(identical)),
        ("artifact == last audited query", str(audited)),
        ("adversarial video (npy)", str(files["npy"])),
        ("adversarial video (FFV1 mkv)", str(files["mkv"])),
        ("job page", files["page"]),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n== VAAS demo report ==")
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    (files["npy"].parent / "job.json").write_text(json.dumps(job, indent=2))


if __name__ == "__main__":
    sys.exit(main())
