"""Video in and out.

In: `.npy` (uint8 T×H×W×3) or any container PyAV decodes; T frames sampled uniformly and resized to
the model's input. Out: lossless only — FFV1 RGB (bgr0, a pure rearrangement of RGB) in
Matroska, and `.npy`. Both round-trip bit-exactly, which is what lets a downloaded adversarial clip
reproduce the oracle's answer.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class VideoError(ValueError):
    """The input cannot be used as a video; the message says what to fix."""


@dataclass(frozen=True)
class DecodeLimits:
    max_frames: int = 4096
    max_pixels: int = 4096 * 2160


def clip_sha256(clip: np.ndarray) -> str:
    """SHA-256 of the exact uint8 bytes (C order) of one clip, as the audit log records it."""
    return hashlib.sha256(np.ascontiguousarray(clip, dtype=np.uint8).tobytes()).hexdigest()


def sample_indices(n_frames: int, t: int) -> np.ndarray:
    """T indices spread uniformly over n frames (repeats when the video is shorter than T)."""
    return np.linspace(0, n_frames - 1, t).round().astype(np.int64)


def _resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or frame.shape[:2] == size:
        return frame
    h, w = size
    import cv2

    shrinking = frame.shape[0] >= h and frame.shape[1] >= w
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(frame, (w, h), interpolation=interpolation)


def _fit(frames: np.ndarray, t: int, size: tuple[int, int]) -> np.ndarray:
    picked = frames[sample_indices(len(frames), t)]
    return np.stack([_resize(f, size) for f in picked]).astype(np.uint8)


def _load_npy(data: bytes) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise VideoError(f"unreadable .npy ({exc}); pickled/object arrays are refused") from exc
    except Exception as exc:
        raise VideoError(f"unreadable .npy: {exc}") from exc
    if array.dtype != np.uint8:
        raise VideoError(f".npy clips must be uint8 (0-255 RGB), got {array.dtype}")
    if array.ndim != 4 or array.shape[-1] != 3:
        raise VideoError(f".npy clips must be shaped T×H×W×3 (RGB), got {array.shape}")
    return array


def _decode_container(
    data: bytes, limits: DecodeLimits, size: tuple[int, int] | None
) -> np.ndarray:
    import av

    frames: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise VideoError("the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if frame.width * frame.height > limits.max_pixels:
                    raise VideoError(
                        f"resolution {frame.width}×{frame.height} is above the limit of "
                        f"{limits.max_pixels} pixels per frame; downscale the video"
                    )
                if len(frames) >= limits.max_frames:
                    raise VideoError(
                        f"more than {limits.max_frames} frames; trim the video to the clip to attack"
                    )
                # Resize while decoding so memory stays bounded by the model's input size.
                frames.append(_resize(frame.to_ndarray(format="rgb24"), size))
    except VideoError:
        raise
    except Exception as exc:  # PyAV raises many error types for corrupt input
        raise VideoError(f"could not decode the video ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise VideoError("the video has no decodable frames")
    return np.stack(frames)


def decode_video(
    data: bytes,
    frames: int,
    size: tuple[int, int],
    limits: DecodeLimits = DecodeLimits(),
) -> np.ndarray:
    """Decode bytes (npy or a container) into a uint8 clip of `frames`×H×W×3."""
    if not data:
        raise VideoError("the upload is empty")
    if data[:6] == b"\x93NUMPY":
        array = _load_npy(data)
        if array.shape[0] == 0:
            raise VideoError("the .npy clip has zero frames")
        if array.shape[0] > limits.max_frames:
            raise VideoError(f"more than {limits.max_frames} frames; trim the clip")
        if array.shape[1] * array.shape[2] > limits.max_pixels:
            raise VideoError(f"frames above {limits.max_pixels} pixels; downscale the clip")
        return _fit(array, frames, size)
    return _fit(_decode_container(data, limits, size), frames, size)


def write_npy(clip: np.ndarray, path: Path) -> None:
    np.save(path, np.ascontiguousarray(clip, dtype=np.uint8), allow_pickle=False)


def encode_ffv1(clip: np.ndarray, fps: int = 25) -> bytes:
    """Lossless FFV1 RGB (bgr0: the same bytes reordered and padded; 8-bit gbrp is not offered) in Matroska."""
    import av

    t, h, w, _ = clip.shape
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "bgr0"
        for frame_rgb in clip:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
            for packet in stream.encode(frame.reformat(format="bgr0")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def decode_lossless(data: bytes) -> np.ndarray:
    """Every frame of a lossless file (npy or FFV1 mkv), with no resampling."""
    if data[:6] == b"\x93NUMPY":
        return _load_npy(data)
    return _decode_container(data, DecodeLimits(max_frames=1 << 20, max_pixels=1 << 30), size=None)
