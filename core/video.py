"""Video in and out.

In: `.npy` (uint8 T×H×W×3) or any container PyAV decodes; T frames sampled uniformly and resized to
the model's input. Uploads are hostile until checked: a `.npy` header and a container's declared
resolution, frame count and packets are checked against `DecodeLimits` before anything is allocated or
decoded, and again frame by frame while decoding; still images are not videos.

Out: lossless only — FFV1 RGB (bgr0, a pure rearrangement of RGB) in Matroska, and `.npy`. Both
round-trip bit-exactly, which is what lets a downloaded adversarial clip reproduce the oracle's answer.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_server.protocol import NPY_MAGIC, npy_array, read_npy_header


class VideoError(ValueError):
    """The input cannot be used as a video; the message says what to fix."""


@dataclass(frozen=True)
class DecodeLimits:
    max_frames: int = 4096
    max_pixels: int = 4096 * 2160
    # Decoding work: an inter-frame codec must decode every frame to reach the ones sampled, and a
    # static 4K stream compresses to a few bytes per frame, so a file under the upload limit can hold
    # hours of 4K. 2**30 pixels is ~120 frames of 4K, ~500 of 1080p or 4096 of 512×512: about five
    # seconds of decoding on one core.
    max_total_pixels: int = 1 << 30


ACCEPTED_INPUT = "send an mp4, avi, mkv or webm video, or a uint8 T×H×W×3 .npy"


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


# ------------------------------------------------------------------------------------------ limits
def _check_frame_size(width: int, height: int, limits: DecodeLimits) -> None:
    if width * height > limits.max_pixels:
        raise VideoError(
            f"resolution {width}×{height} is above the limit of {limits.max_pixels} pixels per frame; "
            "downscale the video"
        )


def _check_frame_count(frames: int, limits: DecodeLimits, what: str) -> None:
    """`what` says where the count comes from: 'the video declares', 'the .npy clip has', …"""
    if frames > limits.max_frames:
        raise VideoError(
            f"{what} {frames} frames, more than the limit of {limits.max_frames}; "
            f"trim it to the clip to attack"
        )


def _check_decode_work(pixels: int, what: str, limits: DecodeLimits) -> None:
    if pixels > limits.max_total_pixels:
        raise VideoError(
            f"the video is too long for its resolution: {what} is more than the limit of "
            f"{limits.max_total_pixels} decoded pixels; trim or downscale it"
        )


# --------------------------------------------------------------------------------------------- npy
def _load_npy(data: bytes, limits: DecodeLimits) -> np.ndarray:
    """A T×H×W×3 uint8 clip from .npy bytes: the header is checked before any pixel is touched."""
    try:
        header = read_npy_header(data)
    except Exception as exc:  # numpy raises ValueError, SyntaxError, … for a corrupt header
        raise VideoError(f"unreadable .npy header ({exc}); save the clip with np.save") from exc
    _check_npy_header(header.shape, header.dtype, limits)
    try:
        return npy_array(data, header)
    except ValueError as exc:
        raise VideoError(
            f"unreadable .npy ({exc}); upload the file np.save wrote, whole and unchanged"
        ) from exc


def _check_npy_header(shape: tuple[int, ...], dtype: np.dtype, limits: DecodeLimits) -> None:
    if dtype.hasobject:
        raise VideoError("pickled .npy (an object array) is refused: loading it could run code; "
                         "send uint8 pixels saved with np.save(..., allow_pickle=False)")
    if dtype != np.uint8:
        raise VideoError(f".npy clips must be uint8 (0-255 RGB), got {dtype}; "
                         "scale to 0-255 and convert with clip.astype(np.uint8)")
    if len(shape) != 4 or shape[-1] != 3:
        raise VideoError(f".npy clips must be shaped T×H×W×3 (RGB), got {shape}")
    frames, height, width, _ = shape
    if frames == 0:
        raise VideoError("the .npy clip has zero frames")
    if height == 0 or width == 0:
        raise VideoError(f"the .npy clip's frames are empty ({height}×{width} pixels)")
    _check_frame_count(frames, limits, "the .npy clip has")
    _check_frame_size(width, height, limits)


# --------------------------------------------------------------------------------------- container
def _failure_reason(exc: Exception) -> str:
    """FFmpeg's own words (PyAV appends an errno and a '<none>' file name that mean nothing here)."""
    strerror = getattr(exc, "strerror", None)
    return strerror if isinstance(strerror, str) and strerror else f"{type(exc).__name__}: {exc}"


def _video_stream(container):
    """The first video stream, refusing still images and files without video."""
    format_name = container.format.name
    if format_name.endswith("_pipe") or format_name == "image2":
        image = format_name.removesuffix("_pipe").upper()
        raise VideoError(
            f"the upload is a still image ({image}), not a video; encode it as a clip first "
            "(e.g. ffmpeg -loop 1 -i image.png -t 1 clip.mp4)"
        )
    if not container.streams:
        raise VideoError(f"the file holds no readable stream (is it truncated or corrupt?); {ACCEPTED_INPUT}")
    if not container.streams.video:
        found = ", ".join(sorted({stream.type for stream in container.streams}))
        raise VideoError(f"the file has no video stream (only {found}); {ACCEPTED_INPUT}")
    return container.streams.video[0]


def _check_declared(stream, limits: DecodeLimits) -> None:
    """Refuse on what the container declares, before the decoder allocates a single frame."""
    width, height = stream.codec_context.width, stream.codec_context.height
    _check_frame_size(width, height, limits)
    declared_frames = stream.frames  # 0 when the container does not say (Matroska, WebM)
    _check_frame_count(declared_frames, limits, "the video declares")
    _check_decode_work(
        declared_frames * width * height, f"{declared_frames} frames of {width}×{height}", limits
    )


def _check_packets(data: bytes, limits: DecodeLimits) -> None:
    """Count the video stream's packets (demuxing only, no decoding) and refuse what would be too long.

    Containers without a frame count (Matroska, WebM) would otherwise be found too long only after
    decoding up to the limit; reading packets costs microseconds each. One packet is one frame for
    the codecs these containers carry; decoding checks again in case a stream says otherwise.
    """
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        packets = 0
        for packet in container.demux(stream):
            if not packet.size:  # the demuxer ends with an empty flush packet
                continue
            packets += 1
            _check_frame_count(packets, limits, "the video has at least")
            _check_decode_work(packets * width * height, f"{packets} frames of {width}×{height}", limits)


def _decode_frames(container, stream, limits: DecodeLimits, size: tuple[int, int] | None) -> list[np.ndarray]:
    """Every frame, resized while decoding, within the frame, resolution and decoding-work limits.

    Declared sizes can lie, so each decoded frame is checked again before it is converted.
    """
    frames: list[np.ndarray] = []
    decoded_pixels = 0
    for frame in container.decode(stream):
        _check_frame_size(frame.width, frame.height, limits)
        _check_frame_count(len(frames) + 1, limits, "the video has at least")
        decoded_pixels += frame.width * frame.height
        _check_decode_work(decoded_pixels, f"{len(frames) + 1} frames of {frame.width}×{frame.height} so far",
                           limits)
        # Resize while decoding so memory stays bounded by the model's input size.
        frames.append(_resize(frame.to_ndarray(format="rgb24"), size))
    return frames


def _decode_container(
    data: bytes, limits: DecodeLimits, size: tuple[int, int] | None
) -> np.ndarray:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = _video_stream(container)
            _check_declared(stream, limits)
            if not stream.frames:
                _check_packets(data, limits)
            stream.thread_type = "AUTO"
            frames = _decode_frames(container, stream, limits, size)
    except VideoError:
        raise
    except Exception as exc:  # PyAV raises many error types for corrupt input
        raise VideoError(f"could not decode the video ({_failure_reason(exc)}); {ACCEPTED_INPUT}") from exc
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
    if data[:6] == NPY_MAGIC:
        return _fit(_load_npy(data, limits), frames, size)
    return _fit(_decode_container(data, limits, size), frames, size)


def write_npy(clip: np.ndarray, path: Path) -> None:
    np.save(path, np.ascontiguousarray(clip, dtype=np.uint8), allow_pickle=False)


def encode_ffv1(clip: np.ndarray, fps: int = 25) -> bytes:
    """Lossless FFV1 RGB (bgr0: the same bytes reordered and padded; 8-bit gbrp is not offered) in
    Matroska."""
    import av

    _, h, w, _ = clip.shape
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
    """Every frame of a lossless file (npy or FFV1 mkv), with no resampling (our own artifacts: no limits)."""
    unlimited = DecodeLimits(max_frames=1 << 20, max_pixels=1 << 30, max_total_pixels=1 << 50)
    if data[:6] == NPY_MAGIC:
        return np.array(_load_npy(data, unlimited))  # a writable copy, not a view of `data`
    return _decode_container(data, unlimited, size=None)
