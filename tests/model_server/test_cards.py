"""Markdown model cards and confusion matrices; the c3d and r2plus1d architectures."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from model_server import attack_set, cards, dataset, zoo
from model_server.architectures.c3d import C3D
from model_server.architectures.r2plus1d import R2Plus1D, _mid_channels

WITH_WEIGHTS = [name for name in sorted(zoo.MODELS) if zoo.weights_path(name).exists()]


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_card_exists_and_names_the_weights_sha256(name: str) -> None:
    text = cards.card_md_path(name).read_text()
    sha = hashlib.sha256(zoo.weights_path(name).read_bytes()).hexdigest()
    assert f"sha256: `{sha}`" in text
    assert zoo.load_card(name)["weights_sha256"] == sha
    accuracy = zoo.load_card(name)["accuracy"]
    assert (f"{accuracy:.2%}" if accuracy is not None else "not measured here") in text
    if attack_set.is_motion_model(name):
        png = cards.confusion_png_path(name)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size < 100_000
        assert png.name in text


def test_plot_confusion(tmp_path) -> None:
    counts = np.diag(np.full(len(dataset.CLASS_NAMES), 10))
    counts[0, 1] = 3
    path = tmp_path / "m_confusion.png"
    cards.plot_confusion(counts, "m", path)
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size < 100_000


@pytest.mark.parametrize("cls", [C3D, R2Plus1D])
def test_forward_shape(cls: type) -> None:
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randint(0, 256, (2, 3, 16, 112, 112)).float()
    with torch.inference_mode():
        assert model(x).shape == (2, len(dataset.CLASS_NAMES))


def test_r2plus1d_factorisation_keeps_the_parameter_count() -> None:
    """The paper's mid width makes a (2+1)D conv about as big as the 3×3×3 conv it replaces."""
    cin, cout = 64, 128
    mid = _mid_channels(cin, cout)
    factorised = cin * mid * 9 + mid * cout * 3
    assert abs(factorised - cin * cout * 27) / (cin * cout * 27) < 0.02
