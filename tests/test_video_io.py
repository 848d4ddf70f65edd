"""Lossless round trips and decoding of common containers (pure logic, no services)."""
from __future__ import annotations

import io

import numpy as np
import pytest

from core.video import VideoError, decode_lossless, decode_video, encode_ffv1, sample_indices


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape", [(16, 112, 112, 3), (5, 37, 64, 3), (1, 8, 8, 3)])
def test_lossless_round_trip_is_bit_exact(seed, shape):
    clip = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    assert np.array_equal(decode_lossless(encode_ffv1(clip)), clip)
    buffer = io.BytesIO()
    np.save(buffer, clip)
    assert np.array_equal(decode_lossless(buffer.getvalue()), clip)


def test_decode_video_samples_and_resizes():
    clip = np.random.default_rng(0).integers(0, 256, size=(40, 64, 80, 3), dtype=np.uint8)
    out = decode_video(encode_ffv1(clip), frames=16, size=(112, 112))
    assert out.shape == (16, 112, 112, 3) and out.dtype == np.uint8


def test_decode_video_keeps_a_clip_of_the_model_shape_exact():
    clip = np.random.default_rng(1).integers(0, 256, size=(16, 112, 112, 3), dtype=np.uint8)
    assert np.array_equal(decode_video(encode_ffv1(clip), 16, (112, 112)), clip)


def test_sample_indices_cover_the_video():
    assert sample_indices(16, 16).tolist() == list(range(16))
    picked = sample_indices(100, 16)
    assert picked[0] == 0 and picked[-1] == 99 and np.all(np.diff(picked) > 0)


@pytest.mark.parametrize("data", [b"", b"garbage" * 50, b"\x93NUMPYjunk"])
def test_undecodable_input_raises_video_error(data):
    with pytest.raises(VideoError):
        decode_video(data, 16, (112, 112))
