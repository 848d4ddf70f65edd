"""The TorchServe handler, driven in-process with a stand-in for TorchServe's Context.

The integration tests (test_oracle_http.py) check the same behaviour through a real TorchServe;
these run without Java and pin down the per-request error handling of a mixed batch.
"""

from __future__ import annotations

import json

import pytest

from core.memory import _glibc_mallopt
from model_server import archive, dataset, zoo
from model_server.handler import OracleHandler
from model_server.protocol import encode_batch, parse_answers


class FakeContext:
    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.system_properties = {"model_dir": str(zoo.WEIGHTS_DIR), "gpu_id": None}
        self.model_yaml_config = archive.model_config("mini_c3d")
        self.headers = headers or {}
        self.status: dict[int, int] = {}

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self.headers.get(key)

    def set_response_content_type(self, idx: int, value: str) -> None:
        assert value == "application/json"

    def set_response_status(self, code: int, phrase: str, idx: int) -> None:
        self.status[idx] = code


@pytest.fixture(scope="module")
def handler() -> OracleHandler:
    handler = OracleHandler()
    handler.initialize(FakeContext())
    return handler


def test_a_bad_request_fails_alone(handler: OracleHandler) -> None:
    clips, _ = dataset.generate_split("test", n_per_class=1, seed=3)
    context = FakeContext()
    batch = [
        {"body": bytearray(encode_batch(clips[:3]))},
        {"body": bytearray(b"junk")},
        {"data": encode_batch(clips[3:4])},
    ]
    replies = handler.handle(batch, context)
    assert context.status == {1: 400}
    assert "not a .npy" in json.loads(replies[1])["message"]
    # …and the good ones get exactly the answers they get alone (each request is its own forward)
    for idx, clips_sent in ((0, clips[:3]), (2, clips[3:4])):
        alone = handler.handle([{"body": encode_batch(clips_sent)}], FakeContext())[0]
        assert (parse_answers(json.loads(replies[idx]), len(clips_sent))
                == parse_answers(json.loads(alone), len(clips_sent)))


def test_decoded_json_bodies_are_refused(handler: OracleHandler) -> None:
    context = FakeContext()
    replies = handler.handle([{"body": {"clips": [1, 2, 3]}}], context)
    assert context.status == {0: 400} and "application/octet-stream" in replies[0]


def test_describe(handler: OracleHandler) -> None:
    (reply,) = handler.handle([{"body": b""}], FakeContext({"describe": "True"}))
    meta = json.loads(reply)
    assert meta["labels"] == dataset.CLASS_NAMES
    assert meta["input"] == {
        "frames": 16,
        "height": 112,
        "width": 112,
        "channels": 3,
        "dtype": "uint8",
        "layout": "NTHWC",
    }
    assert meta["max_clips"] == 48 and meta["model"] == "mini_c3d"


@pytest.mark.skipif(_glibc_mallopt() is None, reason="mallopt is glibc's")
def test_the_handler_keeps_freed_memory_for_its_forwards(handler: OracleHandler) -> None:
    assert handler.memory_kept  # core/memory.py: 1.8-3.9x faster CPU forwards, same answers
