"""Every served zoo model through a running TorchServe (the `oracle_http` fixture starts it if needed).

The models are those `serve start` serves by default: every zoo model whose weights and card exist
(`archive.available()`), so a model joins these tests as soon as its weights are committed.

Attack sets: motion-dataset models list theirs in the card (`model_server.attack_set.clips(name)`
renders it); `effnet_lite0_imagenet` (dataset "imagenet-real-footage") renders its real footage with
`model_server.imagenet.attack_set_clips()`. Models whose card has no attack set skip that test.
"""

from __future__ import annotations

import importlib
from functools import cache

import numpy as np
import pytest

from core.settings import get_settings
from model_server import archive, attack_set, dataset, imagenet, zoo
from model_server.client import OracleHTTP
from model_server.protocol import ANSWER_KEYS

SERVED = archive.available()


@cache
def own_attack_set(model: str) -> tuple[np.ndarray, np.ndarray] | None:
    card = zoo.load_card(model)
    if model == imagenet.NAME:
        clips, labels, _ = imagenet.attack_set_clips()
        return clips, labels
    if not card.get("attack_set"):
        return None
    if attack_set.card_dataset(card) == attack_set.MOTION_DATASET:
        return attack_set.clips(model)
    module, _, function = card["attack_set_generator"].rpartition(".")
    clips, labels, *_ = getattr(importlib.import_module(module), function)()
    return np.asarray(clips), np.asarray(labels)


@cache
def three_clips(model: str) -> np.ndarray:
    """Three clips the model is meant to see: its attack set's, else motion-dataset test clips."""
    own = own_attack_set(model)
    if own is not None:
        return own[0][:3]
    frames, height, width = zoo.entry(model).input.frame_shape
    clips = dataset.generate_split("test", n_per_class=1, seed=11)[0][:3]
    assert clips.shape[1:4] == (frames, height, width)
    return clips


def test_every_model_with_weights_is_served(oracle_http: OracleHTTP) -> None:
    assert imagenet.NAME in SERVED and "mini_c3d" in SERVED
    assert set(SERVED) <= set(oracle_http.list_models())


@pytest.mark.parametrize("model", SERVED)
def test_answers_carry_exactly_label_name_and_probability(oracle_http: OracleHTTP, model: str) -> None:
    labels = zoo.load_card(model)["labels"]
    answers = oracle_http.predict(model, three_clips(model))
    assert len(answers) == 3
    for answer in answers:
        assert set(answer) == set(ANSWER_KEYS)
        assert isinstance(answer["label"], int) and 0 <= answer["label"] < len(labels)
        assert answer["label_name"] == labels[answer["label"]]
        assert 1 / len(labels) <= answer["probability"] <= 1 + 1e-6


@pytest.mark.parametrize("model", SERVED)
def test_a_batch_answers_like_single_requests(oracle_http: OracleHTTP, model: str) -> None:
    clips = three_clips(model)
    batch = oracle_http.predict(model, clips)
    singles = [oracle_http.predict(model, clip[None])[0] for clip in clips]
    assert [a["label"] for a in batch] == [a["label"] for a in singles]
    assert [a["probability"] for a in batch] == pytest.approx([a["probability"] for a in singles], abs=1e-4)


@pytest.mark.parametrize("model", SERVED)
def test_describe_equals_the_card(oracle_http: OracleHTTP, model: str) -> None:
    spec = oracle_http.describe(model)
    card = zoo.load_card(model)
    assert spec is not None
    assert spec.labels == card["labels"]
    assert spec.frame_shape == zoo.entry(model).input.frame_shape
    assert spec.max_clips == get_settings().oracle_max_batch


@pytest.mark.parametrize("model", SERVED)
def test_the_attack_set_is_classified_as_the_card_says(oracle_http: OracleHTTP, model: str) -> None:
    own = own_attack_set(model)
    if own is None:
        pytest.skip(f"{model}'s card names no attack set")
    clips, labels = own
    answers = oracle_http.predict(model, clips)
    assert [a["label"] for a in answers] == labels.tolist()


def test_the_imagenet_attack_set_is_real_footage_with_licences() -> None:
    card = zoo.load_card(imagenet.NAME)
    assert card["dataset"] == "imagenet-real-footage" and len(card["labels"]) == 1000
    listed = card["attack_set"]
    assert card["attack_set_generator"] == "model_server.imagenet.attack_set_clips"
    clips, labels, names = imagenet.attack_set_clips()
    assert len(clips) >= 8 and clips.shape[1:] == (16, 112, 112, 3) and clips.dtype == np.uint8
    assert [c["name"] for c in listed] == names
    assert [c["label_index"] for c in listed] == labels.tolist()
    assert all(c["licence"] and c["label"] in c["sensible"] for c in listed)
    # The camera moves: consecutive frames differ, but only a little (a slow pan or zoom).
    steps = np.abs(np.diff(clips.astype(np.int16), axis=1)).mean(axis=(2, 3, 4))
    assert (steps > 0.5).all() and (steps < 30).all()
    # Deterministic: a second rendering is bit-identical.
    assert np.array_equal(imagenet.attack_set_clips()[0], clips)
