"""The attack set: 2 correctly classified test clips per class, fixed in each motion model's card."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_server import attack_set, dataset, zoo

MOTION_MODELS = [
    name
    for name in sorted(zoo.MODELS)
    if zoo.weights_path(name).exists() and attack_set.is_motion_model(name)
]


@pytest.mark.parametrize("name", MOTION_MODELS)
def test_attack_set_is_two_correct_clips_per_class(name: str) -> None:
    clips, labels = attack_set.clips(name)
    n_classes = len(dataset.CLASS_NAMES)
    spec = zoo.entry(name).input
    assert clips.shape == (attack_set.PER_CLASS * n_classes, *spec.frame_shape, 3)
    assert clips.dtype == np.uint8
    assert np.array_equal(np.bincount(labels, minlength=n_classes), [attack_set.PER_CLASS] * n_classes)
    with torch.inference_mode():
        predicted = zoo.load_trained(name)(zoo.to_model_input(clips)).argmax(1).numpy()
    assert np.array_equal(predicted, labels)


@pytest.mark.parametrize("name", MOTION_MODELS)
def test_attack_set_indices_are_test_split_positions(name: str) -> None:
    card = zoo.load_card(name)
    limit = attack_set.clips_per_class_in_test(card)
    for item in card["attack_set"]:
        assert 0 <= item["index"] < limit
    # within a class, indices are increasing (the FIRST correct ones, in order)
    for label in range(len(dataset.CLASS_NAMES)):
        indices = [item["index"] for item in card["attack_set"] if item["label"] == label]
        assert indices == sorted(set(indices))


def test_render_is_the_generated_test_clip() -> None:
    """Clip (label, index) is exactly what generate_split('test', …) holds at that position."""
    label, seed = 3, 0
    generated = dataset._render_class(dataset.split_photos("test"), "test", label, 2, seed)
    assert np.array_equal(attack_set.render(label, 1, seed), generated[1])


def test_card_seed() -> None:
    assert attack_set.card_seed({"seed": 5, "train_command": "python -m x --seed 7"}) == 5
    assert attack_set.card_seed({"train_command": "python -m model_server.train --seed 7"}) == 7
    assert attack_set.card_seed({"train_command": "python -m model_server.train --seed=9"}) == 9
    assert attack_set.card_seed({"train_command": "python -m model_server.train --model c3d"}) == 0


def test_other_datasets_are_left_alone(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    name = sorted(zoo.MODELS)[0]
    card = {"model": name, "dataset": "imagenet-real-footage", "attack_set": [{"video": "x"}]}
    monkeypatch.setattr(zoo, "load_card", lambda _name, *a, **k: card)
    with pytest.raises(ValueError, match="imagenet-real-footage"):
        attack_set.clips(name)
    with pytest.raises(ValueError, match="imagenet-real-footage"):
        attack_set.compute(name)
    written = []
    monkeypatch.setattr(attack_set, "write", lambda *a, **k: written.append(a))
    monkeypatch.setattr(zoo, "weights_path", lambda _name, *a, **k: zoo.card_path(sorted(zoo.MODELS)[0]))
    attack_set.main(["--model", name])
    assert not written and "left alone" in capsys.readouterr().out
