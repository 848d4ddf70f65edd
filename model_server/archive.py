"""Build the `.mar` archives TorchServe serves.

    python -m model_server.archive [--models mini_c3d …] [--store var/model_store]

Without --models it archives every zoo model whose weights and card exist (`available()`).

An archive holds handler.py (which imports the protocol and the zoo from the installed package),
the fp16 weights and the model card, and a model-config.yaml with the batching settings and the
handler's options (which zoo architecture to build, the most clips a request may carry).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from core.settings import REPO_ROOT, get_settings
from model_server import zoo

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_STORE = REPO_ROOT / "var" / "model_store"
SOURCES = [PACKAGE_DIR / "handler.py"]


def model_config(name: str) -> dict:
    """Per-model TorchServe settings. Batching merges concurrent requests (from several jobs) into
    one forward; 5 ms of waiting is small next to a forward of even one clip on a CPU."""
    return {
        "minWorkers": 1,
        "maxWorkers": 1,
        "batchSize": 8,
        "maxBatchDelay": 5,
        "responseTimeout": 120,
        "handler": {"model": name, "max_clips": get_settings().oracle_max_batch, "chunk": 48},
    }


def inputs(name: str, weights_dir: Path = zoo.WEIGHTS_DIR) -> list[Path]:
    """Every file the archive of `name` is built from."""
    return [*SOURCES, zoo.weights_path(name, weights_dir), zoo.card_path(name, weights_dir)]


def available(weights_dir: Path = zoo.WEIGHTS_DIR) -> list[str]:
    """The zoo models whose weights and card exist (trained, or exported): those `serve` starts."""
    return [
        name
        for name in sorted(zoo.MODELS)
        if zoo.weights_path(name, weights_dir).exists() and zoo.card_path(name, weights_dir).exists()
    ]


def is_stale(name: str, store: Path) -> bool:
    """True when the .mar is missing or older than any file it is built from."""
    mar = store / f"{name}.mar"
    return not mar.exists() or any(p.stat().st_mtime > mar.stat().st_mtime for p in inputs(name))


def venv_tool(name: str, hint: str) -> str:
    """Path of a CLI, looked up in the venv's bin dir first (installed next to our interpreter)."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: {hint}")
    return found


def build_archive(name: str, store: Path = DEFAULT_STORE) -> Path:
    zoo.entry(name)  # unknown names fail here, with the zoo's list
    missing = [p for p in inputs(name) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"missing {', '.join(map(str, missing))}: run python -m model_server.train --model {name}"
        )
    store.mkdir(parents=True, exist_ok=True)
    handler, *extra = inputs(name)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "model-config.yaml"
        config.write_text(yaml.safe_dump(model_config(name), sort_keys=False))
        subprocess.run(
            [
                venv_tool("torch-model-archiver", "install torch-model-archiver"),
                "--model-name", name,
                "--version", "1.0",
                "--handler", str(handler),
                "--extra-files", ",".join(map(str, extra)),
                "--config-file", str(config),
                "--export-path", str(store),
                "--force",
            ],
            check=True,
        )  # fmt: skip
    return store / f"{name}.mar"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build TorchServe .mar archives of zoo models.")
    parser.add_argument(
        "--models", nargs="+", choices=sorted(zoo.MODELS), help="default: every zoo model with weights"
    )
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    args = parser.parse_args(argv)
    try:
        for name in args.models or available():
            print(f"wrote {build_archive(name, args.store)}")
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
