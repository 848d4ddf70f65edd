"""The oracle protocol against a running TorchServe (see the `oracle_http` fixture)."""

from __future__ import annotations

import concurrent.futures
import io

import httpx
import numpy as np
import pytest

from core.settings import REPO_ROOT, get_settings
from model_server import archive, dataset, zoo
from model_server.client import OracleHTTP
from model_server.protocol import ANSWER_KEYS, encode_batch
from tests.hostile_videos import npy_header

SAMPLE = REPO_ROOT / "samples" / "sample_clip.npy"


def post(model: str, body: bytes, content_type: str = "application/octet-stream") -> httpx.Response:
    """Straight to TorchServe, bypassing the client's own checks."""
    return httpx.post(
        f"{get_settings().oracle_url}/predictions/{model}",
        content=body,
        headers={"Content-Type": content_type},
        timeout=60,
    )


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def test_clips() -> np.ndarray:
    return dataset.generate_split("test", n_per_class=1, seed=5)[0]


@pytest.fixture(scope="module")
def good_answers(oracle_http: OracleHTTP, test_clips: np.ndarray) -> list:
    """The answers to two test clips, read before any bad body is sent."""
    return oracle_http.predict("mini_c3d", test_clips[:2])


def assert_still_serving(oracle_http: OracleHTTP, test_clips: np.ndarray, good_answers: list) -> None:
    """The model's backend worker is alive and answers as it did before (batching may move the last
    digits)."""
    answers = oracle_http.predict("mini_c3d", test_clips[:2])
    assert [a["label"] for a in answers] == [a["label"] for a in good_answers]
    assert [a["probability"] for a in answers] == pytest.approx([a["probability"] for a in good_answers],
                                                                abs=1e-3)


def test_every_model_answers_top1_only(oracle_http: OracleHTTP, test_clips: np.ndarray) -> None:
    models = oracle_http.list_models()
    assert set(archive.available()) <= set(models)
    for model in models:
        response = post(model, encode_batch(test_clips[:3]))
        assert response.status_code == 200, response.text
        answers = response.json()
        assert len(answers) == 3
        labels = zoo.load_card(model)["labels"]
        for answer in answers:
            assert set(answer) == set(ANSWER_KEYS)
            assert answer["label_name"] == labels[answer["label"]]
            assert 1 / len(labels) <= answer["probability"] <= 1


# What TorchServe itself adds to an answer; anything else in a header could carry model internals.
STANDARD_HEADERS = {"content-type", "content-length", "x-request-id", "pragma", "cache-control", "expires",
                    "connection", "date", "keep-alive"}


def test_neither_headers_nor_error_bodies_leak_more_than_top1(
    oracle_http: OracleHTTP, test_clips: np.ndarray
) -> None:
    for model in oracle_http.list_models():
        answer = post(model, encode_batch(test_clips[:1]))
        assert set(answer.headers) <= STANDARD_HEADERS, (model, dict(answer.headers))
        refused = post(model, npy(test_clips[:1].astype(np.float32)))
        assert 400 <= refused.status_code < 500
        body = refused.json()
        assert set(body) <= {"code", "type", "message"}, (model, body)
        assert not any(ch.isdigit() for ch in body.get("type", "")), body  # no number arrays smuggled out
        assert ("probab" not in body.get("message", "").lower()
                and "logit" not in body.get("message", "").lower())


def test_labels_and_input_equal_the_model_card(oracle_http: OracleHTTP) -> None:
    for model in archive.available():
        spec = oracle_http.describe(model)
        card = zoo.load_card(model)
        assert spec is not None and spec.labels == card["labels"]
        assert spec.frame_shape == zoo.entry(model).input.frame_shape
        assert spec.max_clips == get_settings().oracle_max_batch
    assert oracle_http.describe("no_such_model") is None


def test_batch_answers_equal_single_answers(oracle_http: OracleHTTP, test_clips: np.ndarray) -> None:
    batch = oracle_http.predict("mini_c3d", test_clips)
    singles = [oracle_http.predict("mini_c3d", clip[None])[0] for clip in test_clips]
    assert [a["label"] for a in batch] == [a["label"] for a in singles]
    assert [a["probability"] for a in batch] == pytest.approx([a["probability"] for a in singles], abs=1e-4)


def test_a_requests_answers_do_not_depend_on_the_requests_batched_with_it(
    oracle_http: OracleHTTP, test_clips: np.ndarray
) -> None:
    """TorchServe merges concurrent requests (other jobs') into one batch. A request's answers must
    still be bit-identical to its answers alone: otherwise the last digits of a probability depend on
    what else was running, and the same seed no longer gives the same queries."""
    ours, theirs = test_clips[:7], test_clips[3:]
    alone = oracle_http.predict("mini_c3d", ours)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for _ in range(6):
            crowd = [pool.submit(oracle_http.predict, "mini_c3d", theirs[: 1 + i]) for i in range(4)]
            mine = pool.submit(oracle_http.predict, "mini_c3d", ours)
            crowd += [pool.submit(oracle_http.predict, "mini_c3d", theirs[: 2 + i]) for i in range(3)]
            assert mine.result() == alone
            assert all(len(future.result()) for future in crowd)


def test_the_bundled_sample_is_answered_with_its_class(oracle_http: OracleHTTP) -> None:
    (answer,) = oracle_http.predict("mini_c3d", np.load(SAMPLE)[None])
    assert answer["label_name"] == dataset.SAMPLE_CLASS


def test_the_largest_allowed_batch_fits_the_request_limit(
    oracle_http: OracleHTTP, test_clips: np.ndarray
) -> None:
    n = get_settings().oracle_max_batch
    clips = np.resize(test_clips, (n, *test_clips.shape[1:]))
    assert len(oracle_http.predict("mini_c3d", clips)) == n


ONE_CLIP = np.zeros((1, 16, 112, 112, 3), np.uint8)
OCTET = "application/octet-stream"
BAD_BODIES = {
    "empty": (b"", OCTET),
    "not-npy": (b"\x89PNG\r\n\x1a\n not a clip", OCTET),
    "float": (npy(ONE_CLIP.astype(np.float32)), OCTET),
    "int64": (npy(np.zeros((1, 16, 8, 8, 3), np.int64)), OCTET),
    "uint16-big-endian": (npy(np.zeros((1, 16, 112, 112, 3), ">u2")), OCTET),
    "rank-4": (npy(ONE_CLIP[0]), OCTET),
    "rank-6": (npy(ONE_CLIP[None]), OCTET),
    "wrong-shape": (npy(np.zeros((1, 16, 64, 64, 3), np.uint8)), OCTET),
    "rgba": (npy(np.zeros((1, 16, 112, 112, 4), np.uint8)), OCTET),
    "zero-clips": (npy(np.zeros((0, 16, 112, 112, 3), np.uint8)), OCTET),
    "too-many-clips": (npy(np.zeros((49, 16, 112, 112, 3), np.uint8)), OCTET),
    "pickled-object": (npy(np.array([{"x": 1}], dtype=object), allow_pickle=True), OCTET),
    "truncated": (npy(ONE_CLIP)[:5000], OCTET),
    "trailing-bytes": (npy(ONE_CLIP) + b"\0" * 100, OCTET),
    "corrupt-header": (b"\x93NUMPY\x01\x00\x10\x00{'descr': '|u1'\n" + bytes(64), OCTET),
    "negative-shape": (npy_header("(-1, 16, 112, 112, 3)") + bytes(64), OCTET),
    # A header declaring a million clips (602 GB): refused from the header, nothing allocated.
    "declares-1M-clips": (npy_header("(1000000, 16, 112, 112, 3)") + bytes(64), OCTET),
    # A full batch declared (29 MB), 64 bytes sent: refused as truncated, not allocated and zero-filled.
    "declares-48-clips-sends-64-bytes": (npy_header("(48, 16, 112, 112, 3)") + bytes(64), OCTET),
    "json": (b'{"clips": [[1, 2, 3]]}', "application/json"),
    "text": (b"hello oracle", "text/plain"),
    "form-urlencoded": (b"clips=1&clips=2", "application/x-www-form-urlencoded"),
    "multipart-form": (
        b"--b\r\nContent-Disposition: form-data; name=\"data\"; filename=\"clip.npy\"\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n" + npy(ONE_CLIP) + b"\r\n--b--\r\n",
        "multipart/form-data; boundary=b",
    ),
    "over-size-limit": (b"\x93NUMPY" + bytes(41_000_000), OCTET),
}
# Refused by TorchServe's frontend before our handler sees them, with TorchServe's own error body.
REFUSED_BY_FRONTEND = {"over-size-limit"}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_malformed_bodies_get_a_4xx_and_the_worker_keeps_serving(
    oracle_http: OracleHTTP, test_clips: np.ndarray, good_answers: list, case: str
) -> None:
    body, content_type = BAD_BODIES[case]
    response = post("mini_c3d", body, content_type)
    assert 400 <= response.status_code < 500, response.text
    if case not in REFUSED_BY_FRONTEND:
        assert response.json()["code"] == 400 and response.json()["message"]
    assert_still_serving(oracle_http, test_clips, good_answers)


def test_a_fortran_order_batch_is_answered_like_the_same_clips_in_c_order(
    test_clips: np.ndarray, good_answers: list
) -> None:
    response = post("mini_c3d", npy(np.asfortranarray(test_clips[:2])))
    assert response.status_code == 200, response.text
    assert [a["label"] for a in response.json()] == [a["label"] for a in good_answers]


def test_a_bad_request_batched_with_good_ones_fails_alone(
    oracle_http: OracleHTTP, test_clips: np.ndarray
) -> None:
    """Concurrent requests are merged into TorchServe batches; only the bad ones may fail."""
    expected = [a["label"] for a in oracle_http.predict("mini_c3d", test_clips)]
    bad_cases = ["not-npy", "truncated", "pickled-object", "float", "declares-1M-clips", "multipart-form"]
    requests = [(encode_batch(test_clips[i : i + 1]), OCTET) for i in range(len(test_clips))]
    requests += [BAD_BODIES[case] for case in bad_cases]
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        responses = list(pool.map(lambda request: post("mini_c3d", *request), requests))
    good, bad = responses[: len(test_clips)], responses[len(test_clips) :]
    assert [r.status_code for r in bad] == [400] * len(bad_cases), [r.text for r in bad]
    assert [r.json()[0]["label"] for r in good] == expected
