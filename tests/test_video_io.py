"""Lossless round trips, decoding of common containers and refusal of hostile input (pure logic, no
services)."""
from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest

from core import video
from core.video import DecodeLimits, VideoError, decode_lossless, decode_video, encode_ffv1, sample_indices
from tests import hostile_videos


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


# ------------------------------------------------------------------------------ hostile input
def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("name", hostile_videos.names())
def test_every_hostile_video_is_refused_with_its_reason(name):
    case = hostile_videos.hostile_video(name)
    with pytest.raises(VideoError) as refused:
        decode_video(case.data, 16, (112, 112))
    assert case.expect in str(refused.value)


@pytest.mark.parametrize("name", ["huge-resolution", "100k-frames-mp4", "4k-bomb-mp4", "100k-frames-mkv",
                                  "4k-bomb-mkv"])
def test_what_the_container_declares_is_refused_before_any_frame_is_decoded(name, monkeypatch):
    """MP4 declares resolution and frame count; Matroska's packets are counted without decoding them."""
    def must_not_decode(*args, **kwargs):
        raise AssertionError("a frame was decoded")

    monkeypatch.setattr(video, "_decode_frames", must_not_decode)
    with pytest.raises(VideoError, match="limit"):
        decode_video(hostile_videos.hostile_video(name).data, 16, (112, 112))


def test_decoding_work_is_bounded_before_and_while_decoding(monkeypatch):
    clip = np.random.default_rng(2).integers(0, 256, size=(40, 64, 80, 3), dtype=np.uint8)
    mkv = encode_ffv1(clip)  # Matroska: no frame count in the header, so its packets are counted
    limits = DecodeLimits(max_total_pixels=10 * 64 * 80)
    with pytest.raises(VideoError, match="11 frames of 80×64 is more than"):
        decode_video(mkv, 16, (112, 112), limits)
    # A stream whose packets under-count its frames is still stopped by the decoder's own count.
    monkeypatch.setattr(video, "_check_packets", lambda data, limits: None)
    with pytest.raises(VideoError, match="11 frames of 80×64 so far"):
        decode_video(mkv, 16, (112, 112), limits)
    assert decode_video(mkv, 16, (112, 112),
                        DecodeLimits(max_total_pixels=40 * 64 * 80)).shape == (16, 112, 112, 3)


def test_frame_limits_apply_to_each_decoded_frame(monkeypatch):
    clip = np.zeros((6, 8, 8, 3), np.uint8)
    with pytest.raises(VideoError, match="at least 6 frames, more than the limit of 5"):
        decode_video(encode_ffv1(clip), 16, (112, 112), DecodeLimits(max_frames=5))
    monkeypatch.setattr(video, "_check_declared", lambda stream, limits: None)  # as if the header lied
    with pytest.raises(VideoError, match="resolution 8×8 is above the limit of 63"):
        decode_video(encode_ffv1(clip), 16, (112, 112), DecodeLimits(max_pixels=63))


def test_an_npy_header_declaring_terabytes_allocates_nothing():
    body = hostile_videos.npy_header("(4096, 4096, 4096, 3)") + bytes(64)  # 206 GB declared
    tracemalloc.start()
    try:
        with pytest.raises(VideoError, match="truncated"):
            decode_video(body, 16, (112, 112), DecodeLimits(max_pixels=1 << 30))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_npy_must_hold_exactly_the_declared_bytes():
    data = npy_bytes(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(VideoError, match="truncated"):
        decode_video(data[:-1], 16, (112, 112))
    with pytest.raises(VideoError, match="1 unexpected bytes after"):
        decode_video(data + b"\0", 16, (112, 112))


@pytest.mark.parametrize("shape", [(16, 0, 112, 3), (16, 112, 0, 3), (0, 112, 112, 3)])
def test_npy_without_pixels_is_refused(shape):
    with pytest.raises(VideoError, match=r"zero frames|frames are empty"):
        decode_video(npy_bytes(np.zeros(shape, np.uint8)), 16, (112, 112))


def test_fortran_order_npy_is_the_same_clip():
    """np.save of a transposed array writes Fortran order: the values are what count, so it is accepted."""
    clip = np.random.default_rng(4).integers(0, 256, size=(16, 112, 112, 3), dtype=np.uint8)
    fortran = npy_bytes(np.asfortranarray(clip))
    assert b"'fortran_order': True" in fortran
    assert np.array_equal(decode_video(fortran, 16, (112, 112)), clip)
    assert np.array_equal(decode_lossless(fortran), clip)


def test_decode_lossless_returns_a_writable_copy():
    clip = np.ones((2, 4, 4, 3), np.uint8)
    decoded = decode_lossless(npy_bytes(clip))
    decoded[0, 0, 0, 0] = 7  # a read-only view of the upload's bytes would raise here
    assert decoded.flags.c_contiguous


def test_a_single_frame_video_is_still_a_video():
    """Only still-image formats are refused; a one-frame clip in a video container is accepted."""
    clip = np.random.default_rng(5).integers(0, 256, size=(1, 112, 112, 3), dtype=np.uint8)
    assert np.array_equal(decode_video(encode_ffv1(clip), 16, (112, 112)), np.repeat(clip, 16, axis=0))
