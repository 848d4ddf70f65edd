"""Start, stop and inspect the local VAAS stack: TorchServe (oracle), a Celery worker and the API.

    python scripts/stack.py up [--profile dev|test]     start what is not running
    python scripts/stack.py down [--profile dev|test]   stop what this script started
    python scripts/stack.py status

Services are found, not assumed: where Postgres (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer,
the stack uses them; where they do not, it falls back to the embedded defaults (SQLite and a Celery
broker kept in SQLite, both under var/) and says so. Variables already set in the environment
(VAAS_DATABASE_URL, VAAS_BROKER_URL, …) always win. The test profile uses its own database, Redis
database, data folder and API port, so tests never touch a running dev stack (TorchServe is shared:
it holds no state of ours).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
RUN_DIR = VAR / "run"
LOG_DIR = VAR / "logs"
PYTHON = sys.executable


@dataclass(frozen=True)
class Profile:
    name: str
    database: str
    redis_db: int
    api_port: int
    data_dir: Path


PROFILES = {
    "dev": Profile("dev", "vaas", 0, 8000, VAR),
    "test": Profile("test", "vaas_test", 15, 8765, VAR / "test"),
    # Extra test stacks, so two pytest sessions on one machine never share a database, queue or API
    # (pick one with VAAS_TEST_STACK=test2). TorchServe is shared: it holds no state of ours.
    "test2": Profile("test2", "vaas_test2", 14, 8766, VAR / "test2"),
    "test3": Profile("test3", "vaas_test3", 13, 8767, VAR / "test3"),
}


def _port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _redis_answers(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _postgres_answers() -> bool:
    if not _port_open("127.0.0.1", 5432):
        return False
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres connect_timeout=3"):
            return True
    except Exception:
        return False


def environment(profile: Profile, announce: bool = True) -> dict[str, str]:
    """The VAAS_* variables for this profile, with embedded fallbacks where services are missing."""
    env: dict[str, str] = {"VAAS_DATA_DIR": str(profile.data_dir), "VAAS_API_PORT": str(profile.api_port)}
    notes = []
    if "VAAS_DATABASE_URL" not in os.environ:
        if _postgres_answers():
            env["VAAS_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{profile.database}"
        else:
            env["VAAS_DATABASE_URL"] = f"sqlite:///{profile.data_dir / 'vaas.db'}"
            notes.append("Postgres is not reachable on 127.0.0.1:5432: using embedded SQLite")
    if "VAAS_BROKER_URL" not in os.environ:
        if _redis_answers():
            env["VAAS_BROKER_URL"] = f"redis://127.0.0.1:6379/{profile.redis_db}"
        else:
            env["VAAS_BROKER_URL"] = f"sqla+sqlite:///{profile.data_dir / 'broker.db'}"
            notes.append("Redis is not reachable on 127.0.0.1:6379: using the embedded SQLite broker")
    merged = {**env, **{k: v for k, v in os.environ.items() if k.startswith("VAAS_")}}
    if announce:
        for note in notes:
            print(f"[stack] {note}")
        print(f"[stack] database {merged['VAAS_DATABASE_URL']}  broker {merged['VAAS_BROKER_URL']}")
    return merged


def _pidfile(profile: Profile, name: str) -> Path:
    return RUN_DIR / f"{profile.name}-{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _running_pid(profile: Profile, name: str) -> int | None:
    path = _pidfile(profile, name)
    if not path.exists():
        return None
    pid = int(path.read_text().strip() or 0)
    return pid if pid and _alive(pid) else None


def _spawn(profile: Profile, name: str, argv: list[str], env: dict[str, str]) -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / f"{profile.name}-{name}.log", "ab")
    process = subprocess.Popen(
        argv, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    _pidfile(profile, name).write_text(str(process.pid))
    return process.pid


def _wait(what: str, ready, timeout_s: float, log_name: str | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    hint = f"; see {LOG_DIR / log_name}" if log_name else ""
    raise RuntimeError(f"{what} did not become ready within {timeout_s:.0f} s{hint}")


def oracle_up() -> bool:
    try:
        return httpx.get("http://127.0.0.1:8080/ping", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _oracle_marker(profile: Profile) -> Path:
    return RUN_DIR / f"{profile.name}-oracle.started"


def start_oracle(profile: Profile, env: dict[str, str]) -> bool:
    """Start TorchServe unless it is already serving; True when this call started it."""
    if oracle_up():
        print("[stack] TorchServe already running on 127.0.0.1:8080")
        return False
    print("[stack] starting TorchServe …")
    subprocess.run([PYTHON, "-m", "model_server.serve", "start"], cwd=ROOT, env={**os.environ, **env},
                   check=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    _oracle_marker(profile).write_text("1")
    return True


def start_worker(profile: Profile, env: dict[str, str], concurrency: int = 2) -> bool:
    if _running_pid(profile, "worker"):
        print(f"[stack] worker ({profile.name}) already running")
        return False
    log_name = f"{profile.name}-worker.log"
    (LOG_DIR / log_name).unlink(missing_ok=True)
    print(f"[stack] starting Celery worker ({profile.name}, concurrency {concurrency}) …")
    _spawn(profile, "worker", [
        PYTHON, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker",
        "--loglevel", "INFO", "--concurrency", str(concurrency), "--pool", "prefork",
        "--hostname", f"vaas-{profile.name}@%h", "--without-gossip", "--without-mingle",
    ], env)
    _wait("Celery worker", lambda: "ready." in (LOG_DIR / log_name).read_text(errors="ignore"), 90, log_name)
    return True


def start_api(profile: Profile, env: dict[str, str]) -> bool:
    url = f"http://127.0.0.1:{profile.api_port}"
    if _running_pid(profile, "api") or _port_open("127.0.0.1", profile.api_port):
        print(f"[stack] API already running on {url}")
        return False
    print(f"[stack] starting API on {url} …")
    _spawn(profile, "api", [
        PYTHON, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(profile.api_port),
    ], env)
    _wait("API", lambda: _port_open("127.0.0.1", profile.api_port), 60, f"{profile.name}-api.log")
    return True


def migrate(env: dict[str, str]) -> None:
    subprocess.run([PYTHON, "-m", "db.migrate"], cwd=ROOT, env={**os.environ, **env}, check=True)


def up(profile_name: str = "dev", components: tuple[str, ...] = ("oracle", "worker", "api")) -> list[str]:
    """Start each missing component; returns the names of those this call started."""
    profile = PROFILES[profile_name]
    env = environment(profile)
    started = []
    if "oracle" in components and start_oracle(profile, env):
        started.append("oracle")
    migrate(env)
    if "worker" in components and start_worker(profile, env):
        started.append("worker")
    if "api" in components and start_api(profile, env):
        started.append("api")
    return started


def _stop_pid(pid: int, timeout_s: float = 20) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


def down(profile_name: str = "dev", components: tuple[str, ...] = ("api", "worker", "oracle")) -> None:
    profile = PROFILES[profile_name]
    for name in ("api", "worker"):
        pid = _running_pid(profile, name) if name in components else None
        if pid:
            print(f"[stack] stopping {name} ({profile.name}, pid {pid})")
            _stop_pid(pid)
            _pidfile(profile, name).unlink(missing_ok=True)
    marker = _oracle_marker(profile)
    if "oracle" in components and marker.exists():
        print("[stack] stopping TorchServe")
        subprocess.run([PYTHON, "-m", "model_server.serve", "stop"], cwd=ROOT, check=False)
        marker.unlink(missing_ok=True)


def status() -> None:
    print(f"TorchServe: {'up' if oracle_up() else 'down'}")
    for profile in PROFILES.values():
        for name in ("worker", "api"):
            pid = _running_pid(profile, name)
            print(f"{profile.name} {name}: {'pid ' + str(pid) if pid else 'down'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="dev")
    args = parser.parse_args()
    if args.command == "up":
        up(args.profile)
    elif args.command == "down":
        down(args.profile)
    elif args.command == "env":
        for key, value in environment(PROFILES[args.profile], announce=False).items():
            print(f"export {key}={value}")
    else:
        status()


if __name__ == "__main__":
    main()
