"""The oracle protocol's request validation: every way a body can be wrong gets a clear error."""

from __future__ import annotations

import io

import numpy as np
import pytest

from model_server.protocol import ProtocolError, decode_batch, encode_batch, parse_answers

SHAPE = (16, 112, 112)


def clips(n: int = 2, shape: tuple[int, int, int] = SHAPE, dtype: type = np.uint8) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, *shape, 3)).astype(dtype)


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def test_round_trip_is_bit_exact() -> None:
    batch = clips(3)
    decoded = decode_batch(encode_batch(batch), SHAPE, max_clips=48)
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, batch)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty body"),
        (b"GIF89a not a numpy file", "not a .npy"),
        (npy(clips(1, dtype=np.float32)), "dtype must be uint8"),
        (npy(clips(1)[0]), "shape must be"),  # rank 4: a single clip without the N axis
        (npy(clips(1, shape=(16, 112, 111))), "shape must be"),
        (npy(clips(1, shape=(8, 112, 112))), "shape must be"),
        (npy(np.zeros((0, *SHAPE, 3), np.uint8)), "N must be between 1 and 4"),
        (npy(clips(5)), "N must be between 1 and 4"),
        (npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), "object arrays are refused"),
        (npy(clips(1))[:200], "unreadable .npy"),  # truncated payload
    ],
    ids=["empty", "not-npy", "float", "rank-4", "wrong-width", "wrong-frames", "zero-clips",
         "too-many-clips", "pickled-object", "truncated"],
)  # fmt: skip
def test_bad_bodies_are_refused_with_a_clear_message(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_batch(body, SHAPE, max_clips=4)


def test_encode_refuses_what_the_server_would_refuse() -> None:
    with pytest.raises(ProtocolError):
        encode_batch(clips(1, dtype=np.float32))
    with pytest.raises(ProtocolError):
        encode_batch(clips(1)[0])


def test_parse_answers_accepts_top1_only() -> None:
    good = [{"label": 3, "label_name": "move_down", "probability": 0.9}]
    assert parse_answers(good, expected=1) == good
    with pytest.raises(ProtocolError, match="exactly"):
        parse_answers([{**good[0], "logits": [0.1] * 10}], expected=1)
    with pytest.raises(ProtocolError, match="list of 2"):
        parse_answers(good, expected=2)
