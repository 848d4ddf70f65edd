"""Fixtures for the API's unit tests: a throwaway SQLite database and a fake oracle, no services."""
from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
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
