"""A stack the fault tests may break: its own Redis server, Postgres behind a proxy that can be cut,
Celery workers and an API the test starts and kills itself. TorchServe is the shared one (the tests
kill a backend worker of a model no other test uses, and TorchServe restarts it).
"""
from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(what: str, ready: Callable[[], bool], timeout_s: float = 60, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(every_s)
    raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; `cut()` drops every connection and refuses new ones until
    `restore()` — what a database that becomes unreachable looks like to its clients."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for sock in list(self._peers):
                self._drop(sock)

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.cut()
        self._listener.close()

    def _drop(self, sock: socket.socket) -> None:
        other = self._peers.pop(sock, None)
        for each in (sock, other):
            if each is None:
                continue
            self._peers.pop(each, None)
            try:
                self._selector.unregister(each)
            except (KeyError, ValueError):
                pass
            each.close()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        if self._cut.is_set():
            client.close()  # refused: the database is "down"
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
        self._peers[client], self._peers[upstream] = upstream, client

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                with self._lock:
                    if key.fileobj is self._listener:
                        self._accept()
                        continue
                    sock = key.fileobj
                    if sock not in self._peers:
                        continue
                    try:
                        data = sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        self._drop(sock)
                        continue
                    try:
                        self._peers[sock].sendall(data)
                    except (BlockingIOError, OSError):
                        self._peers[sock].setblocking(True)
                        try:
                            self._peers[sock].sendall(data)
                        except OSError:
                            self._drop(sock)
                            continue
                        self._peers[sock].setblocking(False)


class RedisServer:
    """A throwaway redis-server (nothing on disk), so restarting it loses its queue like the real one."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until("redis-server", self.answers, 20)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@dataclass
class FaultStack:
    """The environment and processes of the fault tests' own stack."""

    env: dict[str, str]
    log_dir: Path
    api_port: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")
        process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **self.env, **(extra_env or {})},
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_worker(self, name: str, concurrency: int = 1, extra_env: dict[str, str] | None = None) -> None:
        (self.log_dir / f"{name}.log").unlink(missing_ok=True)
        self.spawn(name, [sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker",
                          "--loglevel", "INFO", "--concurrency", str(concurrency), "--pool", "prefork",
                          "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle",
                          "--without-heartbeat"], extra_env)
        wait_until(f"worker {name}", lambda: "ready." in self.log(name), 90, 0.5)

    def start_api(self) -> None:
        self.spawn("api", [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                           "--port", str(self.api_port)])
        wait_until("API", self._api_answers, 60, 0.5)

    def _api_answers(self) -> bool:
        try:
            return httpx.get(f"{self.api}/healthz", timeout=2).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a Celery worker's main process and its children)."""
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, sig)
        process.wait(30)

    def children(self, name: str) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.processes[name].pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def stop_all(self) -> None:
        for name in list(self.processes):
            try:
                self.kill(name, signal.SIGTERM)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill(name, signal.SIGKILL)
