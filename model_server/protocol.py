"""The oracle protocol, defined once for the server (handler) and its clients (API, worker).

Request body: one `.npy` file, uint8, shape N×T×H×W×3 (RGB), N ≥ 1.
Response: a JSON list of N objects {"label": int, "label_name": str, "probability": float}.

This module depends on numpy only, so it can ship inside a `.mar` next to the handler.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class NpyHeader:
    """What a `.npy` header declares; `offset` is where the array's bytes start."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_npy_header(body: bytes) -> NpyHeader:
    """Parse a `.npy` header without touching the data behind it.

    `np.load` allocates whatever shape the header declares before it reads a byte of data, so a
    100-byte body can ask for terabytes: callers check the declared shape and dtype first, then take
    the data with `npy_array`. Raises ValueError (with numpy's reason) when the header is unreadable.
    """
    stream = io.BytesIO(body)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
    else:  # 3.0 exists only for structured dtypes with non-ASCII field names: never a clip
        raise ValueError(f"format version {version[0]}.{version[1]} is not supported, save with np.save")
    if any(n < 0 for n in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    return NpyHeader(tuple(shape), dtype, fortran_order, stream.tell())


def npy_array(body: bytes, header: NpyHeader) -> np.ndarray:
    """The array `header` describes, as a read-only view of `body` (no copy).

    Only for dtypes without objects. Raises ValueError when the data is shorter than declared
    (a truncated upload) or followed by extra bytes (not what np.save writes).
    """
    available = len(body) - header.offset
    if available < header.nbytes:
        raise ValueError(f"truncated: the header declares {header.nbytes} bytes of data, {available} follow")
    if available > header.nbytes:
        raise ValueError(
            f"{available - header.nbytes} unexpected bytes after the {header.nbytes} bytes of data"
        )
    flat = np.frombuffer(body, dtype=header.dtype, count=math.prod(header.shape), offset=header.offset)
    return flat.reshape(header.shape, order="F" if header.fortran_order else "C")


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
    """Parse and validate a request body; `frame_shape` is the model's (T, H, W).

    The header is checked before any data is read, so a body that declares a huge shape is refused
    without allocating it.
    """
    if not body:
        raise ProtocolError("empty body: send one .npy file of uint8 clips shaped N×T×H×W×3")
    if not bytes(body[:6]) == NPY_MAGIC:
        raise ProtocolError("body is not a .npy file: send np.save() output of uint8 N×T×H×W×3")
    try:
        header = read_npy_header(body)
    except Exception as exc:  # numpy raises ValueError, SyntaxError, … for corrupt headers
        raise ProtocolError(f"unreadable .npy header ({exc}); send np.save() output") from exc
    if header.dtype.hasobject:
        raise ProtocolError("pickled .npy: object arrays are refused; send uint8 pixels")
    if header.dtype != np.uint8:
        raise ProtocolError(f"dtype must be uint8, got {header.dtype}")
    t, h, w = frame_shape
    shape = header.shape
    if len(shape) != 5 or shape[1:] != (t, h, w, 3):
        raise ProtocolError(f"shape must be N×{t}×{h}×{w}×3, got {'×'.join(map(str, shape)) or 'a scalar'}")
    if not 1 <= shape[0] <= max_clips:
        raise ProtocolError(f"N must be between 1 and {max_clips}, got {shape[0]}")
    try:
        return npy_array(body, header)
    except ValueError as exc:
        raise ProtocolError(f"unreadable .npy: {exc}") from exc


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
