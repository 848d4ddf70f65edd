"""Fixtures for the API's unit tests: a throwaway SQLite database and a fake oracle, no services."""
from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api import deps, keys, submission
from api.main import create_app
from core.settings import Settings, get_settings
from db.migrate import upgrade
from db.models import Artifact, Job, QueryRecord
from db.session import make_engine
from model_server.client import ModelSpec

LABELS = ["walk", "run", "jump", "wave"]


class FakeOracle:
    """Answers like TorchServe would for one model, `mini`; records what it was asked."""

    def __init__(self, label: int = 1, probability: float = 0.9) -> None:
        self.label = label
        self.probability = probability
        self.predict_calls: list[tuple[str, tuple[int, ...]]] = []
        self.spec = ModelSpec(name="mini", labels=LABELS, frames=4, height=8, width=8, max_clips=8)

    def describe(self, model: str) -> ModelSpec | None:
        return self.spec if model == "mini" else None

    def list_models(self) -> list[str]:
        return ["mini"]

    def predict(self, model: str, clips: np.ndarray) -> list[dict]:
        self.predict_calls.append((model, clips.shape))
        return [
            {"label": self.label, "label_name": LABELS[self.label], "probability": self.probability}
            for _ in clips
        ]

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'vaas.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield sessionmaker(bind=engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as s:
        yield s


@pytest.fixture
def clip_npy() -> bytes:
    clip = np.random.default_rng(0).integers(0, 256, (6, 10, 12, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    np.save(buffer, clip, allow_pickle=False)
    return buffer.getvalue()


# ------------------------------------------------------------------------------ the app on SQLite
HEADER = get_settings().api_key_header


class Broker:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list]] = []
        self.down = False

    def send_task(self, name: str, args: list, **_: object) -> None:
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.sent.append((name, args))


@pytest.fixture
def env(tmp_path: Path, sessions, monkeypatch):
    settings = Settings(data_dir=tmp_path / "var", default_model="mini", max_upload_bytes=50_000,
                        max_queries_cap=1000, page_size_max=20)
    oracle, broker = FakeOracle(), Broker()
    monkeypatch.setattr(submission.celery_app, "send_task", broker.send_task)
    app = create_app()

    def session_override():
        with sessions() as s:
            yield s

    app.dependency_overrides[deps.get_session] = session_override
    app.dependency_overrides[get_settings] = lambda: settings
    app.dependency_overrides[deps.get_oracle] = lambda: oracle
    with sessions() as s:
        _, alice = keys.create_key(s, "alice")
        _, bob = keys.create_key(s, "bob")
    client = TestClient(app)  # no `with`: the lifespan (migrations of the real database) is not run
    return {"client": client, "settings": settings, "oracle": oracle, "broker": broker, "sessions": sessions,
            "alice": {HEADER: alice}, "bob": {HEADER: bob}}


def submit(env, clip: bytes, key: str = "alice", **fields: str):
    data = {"model": "mini", "max_queries": "100", **fields}
    return env["client"].post("/jobs", headers=env[key], data=data, files={"video": ("clip.npy", clip)})


def count(env, model) -> int:
    with env["sessions"]() as s:
        return s.scalar(select(func.count()).select_from(model))


def stored_nothing(env) -> bool:
    uploads = env["settings"].upload_dir
    no_files = not uploads.exists() or not any(uploads.iterdir())
    return no_files and count(env, Job) == 0 and count(env, QueryRecord) == 0 and count(env, Artifact) == 0
