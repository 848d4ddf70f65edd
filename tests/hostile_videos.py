"""A corpus of broken and hostile uploads, built in code at test time (no binary files in the repo).

Each case is a file a client could send as the `video` of POST /jobs, with why it is hostile and a
fragment the refusal's `detail` must contain, so a test can check that the service says what is wrong
rather than only that it refused. Every case must be refused with a 4xx that stores nothing.

Decisions the corpus pins down (see core/video.py):
- a still image (PNG, JPEG) is not a video: refused, with the ffmpeg line that turns it into one;
- a `.npy` is checked from its header before any pixel is read: dtype, rank, channels, zero or negative
  sizes, the frame and resolution limits, and that exactly the declared bytes follow (a header may
  declare terabytes; np.load would allocate them);
- decoding work is bounded: what the container declares (resolution, frame count, frames × pixels) is
  checked before the first frame is decoded, and again while decoding, since declarations can lie.
  (A Fortran-order `.npy` is accepted: it is what np.save writes for a transposed array; see
  tests/test_video_io.py.)

    python -m tests.hostile_videos      # prints the corpus: name, file name, size, why
"""
from __future__ import annotations

import functools
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

# The test profile's upload limit (tests/conftest.py); every case fits under it so the decoder, not
# the size check, is what refuses it.
UPLOAD_LIMIT_BYTES = 8 * 1024 * 1024
CLIP_SHAPE = (16, 112, 112, 3)


@dataclass(frozen=True)
class HostileVideo:
    name: str
    filename: str
    data: bytes
    why: str
    expect: str  # a fragment the 4xx `detail` must contain


@dataclass(frozen=True)
class _Case:
    filename: str
    why: str
    expect: str
    build: Callable[[], bytes]


_CASES: dict[str, _Case] = {}


def _case(
    name: str, filename: str, why: str, expect: str
) -> Callable[[Callable[[], bytes]], Callable[[], bytes]]:
    def register(build: Callable[[], bytes]) -> Callable[[], bytes]:
        _CASES[name] = _Case(filename, why, expect, build)
        return build

    return register


def names() -> list[str]:
    """Case names, without building anything (cheap enough for pytest's collection)."""
    return list(_CASES)


@functools.cache
def hostile_video(name: str) -> HostileVideo:
    case = _CASES[name]
    data = case.build()
    assert len(data) <= UPLOAD_LIMIT_BYTES, f"{name} is {len(data)} bytes: above the test upload limit"
    return HostileVideo(name, case.filename, data, case.why, case.expect)


def corpus() -> list[HostileVideo]:
    return [hostile_video(name) for name in _CASES]


# ------------------------------------------------------------------------------------ helpers
def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def npy_header(shape_text: str, descr: str = "|u1", fortran: bool = False) -> bytes:
    """A hand-written version-1.0 .npy header (np.save cannot write the lies we want to tell)."""
    header = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape_text}, }}".encode("latin-1")
    # np.save pads the header with spaces so the data starts on a 64-byte boundary, ending in '\n'.
    padding = -(10 + len(header) + 1) % 64
    header += b" " * padding + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def _clip(seed: int = 0, shape: tuple[int, ...] = CLIP_SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _container(fmt: str, add_streams: Callable, packets: Callable[[list], Iterator]) -> bytes:
    """Mux the packets `packets(streams)` yields into a `fmt` container written in memory."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as container:
        streams = add_streams(container)
        container.start_encoding()  # write the header even when no packet follows
        for packet in packets(streams):
            container.mux(packet)
    return buffer.getvalue()


def _h264_stream(width: int, height: int, keyint: int = 100_000) -> Callable:
    def add(container) -> list:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "x264-params": f"keyint={keyint}:scenecut=0:bframes=0"}
        return [stream]

    return add


def _black_frame(width: int, height: int):
    import av

    frame = av.VideoFrame(width, height, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    return frame


def _encoded(width: int, height: int, n_frames: int, fmt: str, moving: bool = False) -> bytes:
    """n_frames of H.264 (black, or random noise when `moving`), encoded frame by frame."""
    import av

    def packets(streams: list) -> Iterator:
        (stream,) = streams
        rng = np.random.default_rng(0)
        still = _black_frame(width, height)
        for index in range(n_frames):
            if moving:
                frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height, width, 3), np.uint8),
                                                   "rgb24")
            else:
                frame = still
            frame.pts = index
            yield from stream.encode(frame)
        yield from stream.encode()

    return _container(fmt, _h264_stream(width, height), packets)


def _repeated_skip_frames(width: int, height: int, n_frames: int, fmt: str) -> bytes:
    """One black key frame, then the same tiny 'nothing changed' P-frame muxed n_frames - 1 times.

    Encoding thousands of 4K frames would take minutes; repeating one 30-byte packet gives the same
    stream (every frame decodes to the key frame) in a fraction of a second and a few hundred KiB.
    """
    import av

    def packets(streams: list) -> Iterator:
        (stream,) = streams
        encoded = []
        frame = _black_frame(width, height)
        for index in range(2):
            frame.pts = index
            encoded += stream.encode(frame)
        encoded += stream.encode()
        key, skip = encoded[0], encoded[-1]
        time_base = key.time_base
        key.pts = key.dts = 0
        yield key
        for index in range(1, n_frames):
            packet = av.Packet(bytes(skip))
            packet.stream, packet.time_base, packet.pts, packet.dts = stream, time_base, index, index
            yield packet

    return _container(fmt, _h264_stream(width, height), packets)


def _audio_only(fmt: str) -> bytes:
    import av

    def add(container) -> list:
        return [container.add_stream("aac", rate=16_000)]

    def packets(streams: list) -> Iterator:
        (stream,) = streams
        for index in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16_000, index * 1024
            yield from stream.encode(frame)
        yield from stream.encode()

    return _container(fmt, add, packets)


def _image(extension: str) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(extension, _clip(1, (112, 112, 3)))
    assert ok
    return encoded.tobytes()


@functools.cache
def valid_mp4() -> bytes:
    """16 frames of noise, 112×112 H.264 in MP4 with its index (moov) at the end, as muxers write it."""
    return _encoded(112, 112, 16, "mp4", moving=True)


# ------------------------------------------------------------------------- not a video at all
@_case("empty", "clip.mp4", "zero bytes", "empty")
def _empty() -> bytes:
    return b""


@_case("random-bytes", "clip.mp4", "64 KiB of random bytes with a video extension", "could not decode")
def _random_bytes() -> bytes:
    return np.random.default_rng(7).integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes()


@_case("html-page", "clip.mp4", "an HTML error page saved as .mp4 (a failed download)", "could not decode")
def _html_page() -> bytes:
    return b"<!doctype html><html><head><title>404</title></head><body><h1>Not Found</h1></body></html>\n"


@_case("json-text", "clip.mp4", "a JSON document named .mp4", "could not decode")
def _json_text() -> bytes:
    return json.dumps({"video": "clip.mp4", "frames": [[0, 1, 2]] * 50}).encode()


@_case("shell-script", "clip.avi", "a shell script named .avi", "could not decode")
def _shell_script() -> bytes:
    return b"#!/bin/sh\necho 'this is not a video'\nexit 1\n"


@_case("zip-bomb", "clip.mkv",
       "a zip archive named .mkv whose one member inflates 64 MiB of zeros from ~64 KiB", "could not decode")
def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("clip.mp4", bytes(64 * 1024 * 1024))
    return buffer.getvalue()


@_case("png-image", "clip.mp4", "a still PNG image named .mp4: one frame, no time axis", "still image")
def _png_image() -> bytes:
    return _image(".png")


@_case("jpeg-image", "clip.mp4", "a still JPEG image named .mp4", "still image")
def _jpeg_image() -> bytes:
    return _image(".jpg")


# -------------------------------------------------------------------------- broken containers
@_case("truncated-mp4", "clip.mp4",
       "the first third of a valid MP4: the index (moov) at its end never arrived", "could not decode")
def _truncated_mp4() -> bytes:
    data = valid_mp4()
    return data[: len(data) // 3]


@_case("mp4-index-overwritten", "clip.mp4",
       "a valid MP4 whose index (moov box) was overwritten with random bytes", "no readable stream")
def _mp4_index_overwritten() -> bytes:
    data = bytearray(valid_mp4())
    start = data.index(b"moov") + 4
    data[start:] = np.random.default_rng(3).integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    return bytes(data)


@_case("audio-only-mkv", "clip.mkv", "a Matroska file with one AAC audio stream and no video",
       "no video stream")
def _audio_only_mkv() -> bytes:
    return _audio_only("matroska")


@_case("audio-only-mp4", "clip.mp4", "an MP4 with one AAC audio stream and no video", "no video stream")
def _audio_only_mp4() -> bytes:
    return _audio_only("mp4")


@_case("zero-frames-mp4", "clip.mp4", "an MP4 that declares an H.264 track and holds no frame",
       "no readable stream")
def _zero_frames_mp4() -> bytes:
    return _container("mp4", _h264_stream(112, 112), lambda streams: iter(()))


@_case("zero-frames-mkv", "clip.mkv", "a Matroska header with an H.264 track and no frame",
       "could not decode")
def _zero_frames_mkv() -> bytes:
    return _container("matroska", _h264_stream(112, 112), lambda streams: iter(()))


# ---------------------------------------------------------------------- decompression bombs
@_case("huge-resolution", "clip.mp4",
       "one 8192×8192 frame (200 MB of RGB) in ~100 KiB: the decoder would allocate it",
       "resolution 8192×8192")
def _huge_resolution() -> bytes:
    return _repeated_skip_frames(8192, 8192, 1, "mp4")


@_case("100k-frames-mp4", "clip.mp4", "100 000 frames of 16×16 H.264 in ~1.3 MB", "declares 100000 frames")
def _many_frames_mp4() -> bytes:
    return _encoded(16, 16, 100_000, "mp4")


@_case("100k-frames-mkv", "clip.mkv",
       "100 000 frames of 16×16 in Matroska, which does not declare a frame count", "at least 4097 frames")
def _many_frames_mkv() -> bytes:
    return _encoded(16, 16, 100_000, "matroska")


@_case("4k-bomb-mp4", "clip.mp4",
       "3000 frames of 4096×2160 (80 GB of RGB) in ~110 KiB: within the frame and resolution limits, "
       "but minutes of decoding", "too long for its resolution")
def _bomb_mp4() -> bytes:
    return _repeated_skip_frames(4096, 2160, 3000, "mp4")


@_case("4k-bomb-mkv", "clip.mkv",
       "the same 4K bomb in Matroska, which declares no frame count: refused while decoding",
       "too long for its resolution")
def _bomb_mkv() -> bytes:
    return _repeated_skip_frames(4096, 2160, 3000, "matroska")


@_case("npy-declares-108-GB", "clip.npy",
       "a 128-byte .npy header declaring 4096×2160×4096×3 uint8 (108 GB) followed by 1 KiB", "truncated")
def _npy_declares_108_gb() -> bytes:
    return npy_header("(4096, 2160, 4096, 3)") + bytes(1024)


@_case("npy-100k-frames-declared", "clip.npy", "a .npy header declaring 100 000 frames of 112×112",
       "100000 frames")
def _npy_100k_frames() -> bytes:
    return npy_header("(100000, 112, 112, 3)") + bytes(1024)


@_case("npy-huge-resolution", "clip.npy", "a .npy header declaring one 8192×8192 frame",
       "resolution 8192×8192")
def _npy_huge_resolution() -> bytes:
    return npy_header("(1, 8192, 8192, 3)") + bytes(1024)


# --------------------------------------------------------------------------------- bad .npy
@_case("npy-float32", "clip.npy", "float32 pixels in [0, 1] instead of uint8", "must be uint8")
def _npy_float32() -> bytes:
    return _npy(_clip().astype(np.float32) / 255)


@_case("npy-int64", "clip.npy", "int64 pixels (8 bytes each)", "must be uint8")
def _npy_int64() -> bytes:
    return _npy(_clip((4, 32, 32, 3)).astype(np.int64))


@_case("npy-uint16-big-endian", "clip.npy", "big-endian uint16 pixels", "must be uint8")
def _npy_uint16_big_endian() -> bytes:
    return _npy(_clip((4, 32, 32, 3)).astype(">u2"))


@_case("npy-structured-rgb", "clip.npy", "a structured dtype with r, g, b uint8 fields, shaped T×H×W",
       "must be uint8")
def _npy_structured() -> bytes:
    return _npy(np.zeros((4, 32, 32), dtype=[("r", "u1"), ("g", "u1"), ("b", "u1")]))


@_case("npy-grayscale-rank3", "clip.npy", "T×H×W without a channel axis (grayscale)", "T×H×W×3")
def _npy_rank3() -> bytes:
    return _npy(_clip(shape=(16, 112, 112)))


@_case("npy-rgba", "clip.npy", "four channels (RGBA)", "T×H×W×3")
def _npy_rgba() -> bytes:
    return _npy(_clip(shape=(16, 112, 112, 4)))


@_case("npy-batch-rank5", "clip.npy", "an oracle batch N×T×H×W×3 instead of one clip", "T×H×W×3")
def _npy_rank5() -> bytes:
    return _npy(_clip(shape=(2, 8, 32, 32, 3)))


@_case("npy-zero-frames", "clip.npy", "shape 0×112×112×3", "zero frames")
def _npy_zero_frames() -> bytes:
    return _npy(np.zeros((0, 112, 112, 3), np.uint8))


@_case("npy-zero-width", "clip.npy", "shape 16×112×0×3: frames without pixels", "frames are empty")
def _npy_zero_width() -> bytes:
    return _npy(np.zeros((16, 112, 0, 3), np.uint8))


@_case("npy-pickled-object", "clip.npy", "a pickled object array: loading it runs code", "pickled")
def _npy_pickled() -> bytes:
    return _npy(np.array([{"__reduce__": "os.system"}, [1, 2, 3]], dtype=object), allow_pickle=True)


@_case("npy-corrupt-header", "clip.npy", "the .npy magic followed by a header that is not a dict literal",
       "unreadable .npy header")
def _npy_corrupt_header() -> bytes:
    header = b"{'descr': '|u1', 'shape': (16, 112, __import__('os')) \n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(64)


@_case("npy-negative-shape", "clip.npy", "a header declaring shape (-1, 112, 112, 3)", "negative dimension")
def _npy_negative_shape() -> bytes:
    return npy_header("(-1, 112, 112, 3)") + bytes(1024)


@_case("npy-truncated", "clip.npy", "a valid 16×112×112×3 clip cut in half", "truncated")
def _npy_truncated() -> bytes:
    data = _npy(_clip())
    return data[: len(data) // 2]


@_case("npy-with-trailing-mp4", "clip.npy", "a valid clip with an MP4 appended (a polyglot file)",
       "unexpected bytes after")
def _npy_with_trailing_mp4() -> bytes:
    return _npy(_clip()) + valid_mp4()


def main() -> None:
    for case in corpus():
        print(f"{case.name:26} {case.filename:10} {len(case.data):>9} B  {case.why}")


if __name__ == "__main__":
    main()
