"""The attacker's own models (worker/surrogates.py): shapes, gradients, weights and what they share."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from worker import surrogates
from worker.attacks.vbad import TransferredTentative


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(2, 112, 112, 3), dtype=np.uint8)


def test_image_ensemble_features_are_differentiable_with_respect_to_the_pixels(frames):
    ensemble = surrogates.ImageEnsemble(("efficientnet_lite0", "efficientnet_lite1"), image_size=112,
                                        device="cpu")
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float().requires_grad_(True)
    features = ensemble.features(pixels, layer=5)
    assert [tuple(f.shape) for f in features] == [(2, 112, 7, 7), (2, 112, 7, 7)]
    sum(f.square().sum() for f in features).backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in ensemble.parameters())  # the ensemble itself is frozen


def test_image_ensemble_rejects_models_it_does_not_ship():
    with pytest.raises(ValueError, match="unknown image models"):
        surrogates.ImageEnsemble(("resnet50",), device="cpu")


def test_frozen_backbone_gives_per_frame_maps_without_gradients(frames):
    backbone = surrogates.FrozenBackbone(stages=4, device="cpu")
    features = backbone.features(frames)
    assert tuple(features.shape) == (2, 80, 7, 7)
    assert not features.requires_grad


def test_video_surrogate_weights_match_their_card_and_classify_the_attackers_clips():
    card = json.loads(surrogates.VIDEO_CARD.read_text())
    assert hashlib.sha256(surrogates.VIDEO_SURROGATE.read_bytes()).hexdigest() == card["weights_sha256"]
    model = surrogates.load_video_surrogate("cpu")
    clips, labels = surrogates._attacker_data(2, surrogates.ATTACKER_HOLDOUT_SEED)
    with torch.inference_mode():
        logits = model(torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float())
    assert logits.shape == (20, 10)
    assert (logits.argmax(1).numpy() == labels).mean() >= 0.6  # card: 83% on 200 such clips


def test_reports_name_the_weights_a_surrogate_shares_with_the_victim():
    assert "same ImageNet EfficientNet-Lite0" in surrogates.surrogate_overlap(
        "effnet_lite0_imagenet", ["efficientnet_lite0"])
    assert "Lite0" in surrogates.surrogate_overlap("tsm", surrogates.LITE_NAMES)
    assert "sibling" in surrogates.surrogate_overlap("lrcn", ["efficientnet_lite2"])
    assert surrogates.surrogate_overlap("mini_c3d", surrogates.LITE_NAMES) is None


def test_transferred_tentative_perturbation_is_a_sign_pattern_drawn_with_the_masks():
    clip = np.random.default_rng(1).integers(0, 256, size=(2, 112, 112, 3), dtype=np.uint8)
    tentative = TransferredTentative(["efficientnet_lite0"], image_size=112, layer=5, keep=0.5)
    tentative.set_target_clip(np.full_like(clip, 128))
    first = tentative(clip, np.random.default_rng(7))
    again = tentative(clip, np.random.default_rng(7))
    other = tentative(clip, np.random.default_rng(8))
    assert first.shape == clip.shape
    assert set(np.unique(first)) <= {-1.0, 0.0, 1.0}
    assert np.array_equal(first, again)  # same masks b_n, same perturbation (Eq. 7)
    assert not np.array_equal(first, other)
