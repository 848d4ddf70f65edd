"""Start, stop and inspect the local TorchServe oracle.

    python -m model_server.serve start|stop|status [--store var/model_store] [--models mini_c3d …]

`start` (re)builds stale archives, starts TorchServe with model_server/config.properties, and
returns once every model answers a prediction; starting a running server is a no-op. Without
--models it serves every zoo model whose weights and card exist, one worker each. TorchServe
writes its logs under var/logs/ (never into the caller's cwd).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from core.settings import REPO_ROOT, get_settings
from model_server import archive, zoo
from model_server.client import OracleHTTP, OracleRejected, OracleUnavailable

CONFIG = Path(__file__).resolve().parent / "config.properties"
VAR_DIR = REPO_ROOT / "var"
LOG_DIR = VAR_DIR / "logs"


class ServeError(RuntimeError):
    """TorchServe could not be started or stopped; the message says where to look."""


def client() -> OracleHTTP:
    settings = get_settings()
    return OracleHTTP.from_settings(settings)


def _torchserve() -> str:
    try:
        return archive.venv_tool("torchserve", "install torchserve (and Java 17)")
    except FileNotFoundError as exc:
        raise ServeError(str(exc)) from exc


def _answers(oracle: OracleHTTP, name: str) -> bool:
    """True once `name` answers a real prediction (its worker has loaded the weights)."""
    frames, height, width = zoo.entry(name).input.frame_shape
    try:
        oracle.predict(name, np.zeros((1, frames, height, width, 3), np.uint8))
        return True
    except (OracleUnavailable, OracleRejected):
        return False


def weights_error(name: str) -> str | None:
    """None when the model's weights load into its zoo architecture, else the first line of the error."""
    try:
        zoo.load_trained(name)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def wait_ready(oracle: OracleHTTP, models: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if oracle.ping() and all(_answers(oracle, name) for name in models):
            return
        time.sleep(1.0)
    raise ServeError(
        f"TorchServe did not serve {models} within {timeout_s:.0f}s; see {LOG_DIR}/ts_log.log and "
        f"{LOG_DIR}/model_log.log (is Java 17 installed? is a port of config.properties taken?)"
    )


def start(
    store: Path = archive.DEFAULT_STORE, models: list[str] | None = None, timeout_s: float = 180.0
) -> bool:
    """Start TorchServe unless it already answers; True when this call started it.

    `models` defaults to every zoo model whose weights and card exist (archive.available()); models
    of the zoo without weights yet are skipped with a note, so a partly trained zoo still serves.
    """
    oracle = client()
    explicit = models is not None
    if models is None:
        models = archive.available()
        skipped = sorted(set(zoo.MODELS) - set(models))
        if skipped:
            print(f"not serving {skipped}: no weights yet (python -m model_server.train --model NAME)")
    if oracle.ping():
        served = oracle.list_models()
        missing = sorted(set(models) - set(served))
        note = f"; restart it to add {missing} (models are registered at start only)" if missing else ""
        print(f"TorchServe is already running, serving {served}; nothing to do{note}")
        return False
    # A worker that cannot load its weights retries forever and would hold up every other model:
    # check each model loads here first (a second or two each). Defaults skip a broken model; an
    # explicit --models list fails.
    broken = {name: error for name in models if (error := weights_error(name))}
    for name, error in broken.items():
        print(f"not serving {name}: its weights do not load ({error})")
    if broken and explicit:
        raise ServeError(f"cannot serve {sorted(broken)}: their weights do not load")
    models = [name for name in models if name not in broken]
    if not models:
        raise ServeError("no zoo model has loadable weights: train one first (python -m model_server.train)")
    for name in models:
        if archive.is_stale(name, store):
            print(f"archiving {name} …")
            archive.build_archive(name, store)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    # TorchServe's log4j config reads LOG_LOCATION and METRICS_LOCATION; without them it writes
    # logs/ into the current directory. cwd=var/ catches anything else it drops.
    env = {**os.environ, "LOG_LOCATION": str(LOG_DIR), "METRICS_LOCATION": str(LOG_DIR)}
    command = [
        _torchserve(), "--start", "--ncs",
        "--model-store", str(store),
        "--ts-config", str(CONFIG),
        "--models", *(f"{name}={name}.mar" for name in models),
    ]  # fmt: skip
    with open(LOG_DIR / "torchserve_launcher.log", "ab") as launcher_log:
        subprocess.run(
            command, env=env, cwd=VAR_DIR, check=True, stdout=launcher_log, stderr=subprocess.STDOUT
        )
    wait_ready(oracle, models, timeout_s)
    print(f"TorchServe serves {oracle.list_models()} at {get_settings().oracle_url} (logs in {LOG_DIR})")
    return True


def stop(timeout_s: float = 60.0) -> None:
    oracle = client()
    if not oracle.ping():
        print("TorchServe is not running; nothing to do")
        return
    subprocess.run([_torchserve(), "--stop"], cwd=VAR_DIR, check=True)
    deadline = time.monotonic() + timeout_s
    while oracle.ping():
        if time.monotonic() > deadline:
            raise ServeError(f"TorchServe still answers {timeout_s:.0f}s after --stop")
        time.sleep(0.5)
    print("TorchServe stopped")


def status() -> int:
    oracle = client()
    if not oracle.ping():
        print("TorchServe is not running")
        return 1
    for name in oracle.list_models():
        spec = oracle.describe(name)
        detail = (
            f"{len(spec.labels)} labels, input {spec.frame_shape}, max {spec.max_clips} clips"
            if spec
            else "no metadata"
        )
        print(f"{name}: {detail}")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Start, stop and inspect the local TorchServe oracle.")
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--store", type=Path, default=archive.DEFAULT_STORE)
    parser.add_argument(
        "--models", nargs="+", choices=sorted(zoo.MODELS), help="default: every zoo model with weights"
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the models")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            start(args.store.resolve(), args.models, args.timeout)
        elif args.action == "stop":
            stop()
        else:
            sys.exit(status())
    except (ServeError, FileNotFoundError, subprocess.CalledProcessError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
