"""The oracle protocol, defined once for the server (handler) and its clients (API, worker).

Request body: one `.npy` file, uint8, shape N×T×H×W×3 (RGB), N ≥ 1.
Response: a JSON list of N objects {"label": int, "label_name": str, "probability": float}.

This module depends on numpy only, so it can ship inside a `.mar` next to the handler.
"""
from __future__ import annotations

import io
from typing import TypedDict

import numpy as np

NPY_MAGIC = b"\x93NUMPY"
ANSWER_KEYS = ("label", "label_name", "probability")


class ProtocolError(ValueError):
    """The request body breaks the protocol; the message says what to fix."""


class Prediction(TypedDict):
    label: int
    label_name: str
    probability: float


def encode_batch(clips: np.ndarray) -> bytes:
    """Serialise N clips (N×T×H×W×3 uint8) as the request body."""
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise ProtocolError(f"clips must be uint8 N×T×H×W×3, got {clips.dtype} {clips.shape}")
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(clips), allow_pickle=False)
    return buffer.getvalue()


def decode_batch(
    body: bytes,
    frame_shape: tuple[int, int, int],
    max_clips: int,
) -> np.ndarray:
    """Parse and validate a request body; `frame_shape` is the model's (T, H, W)."""
    if not body:
        raise ProtocolError("empty body: send one .npy file of uint8 clips shaped N×T×H×W×3")
    if not bytes(body[:6]) == NPY_MAGIC:
        raise ProtocolError("body is not a .npy file: send np.save() output of uint8 N×T×H×W×3")
    try:
        clips = np.load(io.BytesIO(body), allow_pickle=False)
    except ValueError as exc:  # pickled object arrays land here with allow_pickle=False
        raise ProtocolError(f"unreadable .npy ({exc}); object arrays are refused") from exc
    except Exception as exc:  # truncated or corrupt headers
        raise ProtocolError(f"unreadable .npy: {exc}") from exc
    if clips.dtype != np.uint8:
        raise ProtocolError(f"dtype must be uint8, got {clips.dtype}")
    t, h, w = frame_shape
    expected = (t, h, w, 3)
    if clips.ndim != 5 or tuple(clips.shape[1:]) != expected:
        raise ProtocolError(f"shape must be N×{t}×{h}×{w}×3, got {'×'.join(map(str, clips.shape))}")
    if not 1 <= clips.shape[0] <= max_clips:
        raise ProtocolError(f"N must be between 1 and {max_clips}, got {clips.shape[0]}")
    return clips


def parse_answers(payload: object, expected: int) -> list[Prediction]:
    """Validate a response: exactly `expected` answers carrying top-1 only."""
    if not isinstance(payload, list) or len(payload) != expected:
        raise ProtocolError(f"oracle must answer a list of {expected} predictions, got {payload!r:.200}")
    answers: list[Prediction] = []
    for item in payload:
        if not isinstance(item, dict) or set(item) != set(ANSWER_KEYS):
            raise ProtocolError(f"oracle answer must have exactly {ANSWER_KEYS}, got {item!r:.200}")
        answers.append(
            Prediction(
                label=int(item["label"]),
                label_name=str(item["label_name"]),
                probability=float(item["probability"]),
            )
        )
    return answers
