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
BAD_BODIES = {
    "empty": (b"", "application/octet-stream"),
    "not-npy": (b"\x89PNG\r\n\x1a\n not a clip", "application/octet-stream"),
    "float": (npy(ONE_CLIP.astype(np.float32)), "application/octet-stream"),
    "rank-4": (npy(ONE_CLIP[0]), "application/octet-stream"),
    "wrong-shape": (npy(np.zeros((1, 16, 64, 64, 3), np.uint8)), "application/octet-stream"),
    "too-many-clips": (npy(np.zeros((49, 16, 112, 112, 3), np.uint8)), "application/octet-stream"),
    "pickled-object": (
        npy(np.array([{"x": 1}], dtype=object), allow_pickle=True),
        "application/octet-stream",
    ),
    "json": (b'{"clips": [[1, 2, 3]]}', "application/json"),
    "over-size-limit": (b"\x93NUMPY" + bytes(41_000_000), "application/octet-stream"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_malformed_bodies_get_a_4xx_and_the_worker_keeps_serving(
    oracle_http: OracleHTTP, test_clips: np.ndarray, case: str
) -> None:
    body, content_type = BAD_BODIES[case]
    response = post("mini_c3d", body, content_type)
    assert 400 <= response.status_code < 500, response.text
    if case != "over-size-limit":  # refused by TorchServe's frontend before our handler sees it
        assert response.json()["code"] == 400 and response.json()["message"]
    assert len(oracle_http.predict("mini_c3d", test_clips[:2])) == 2


def test_a_bad_request_batched_with_good_ones_fails_alone(
    oracle_http: OracleHTTP, test_clips: np.ndarray
) -> None:
    """Concurrent requests are merged into TorchServe batches; only the bad one may fail."""
    expected = [a["label"] for a in oracle_http.predict("mini_c3d", test_clips)]
    bodies = [encode_batch(test_clips[i : i + 1]) for i in range(len(test_clips))] + [b"junk"] * 4
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda body: post("mini_c3d", body), bodies))
    good, bad = responses[: len(test_clips)], responses[len(test_clips) :]
    assert [r.status_code for r in bad] == [400] * 4
    assert [r.json()[0]["label"] for r in good] == expected
