"""The zoo's models, the committed weights and model card, and the bundled sample."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from core.settings import REPO_ROOT
from core.video import decode_lossless
from model_server import dataset, zoo

SAMPLE = REPO_ROOT / "samples" / "sample_clip.npy"


MOTION_MODELS = sorted(name for name, entry in zoo.MODELS.items() if entry.dataset == "motion")


def _num_labels(name: str) -> int:
    return (len(dataset.CLASS_NAMES) if zoo.entry(name).dataset == "motion"
            else len(zoo.load_card(name)["labels"]))


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_forward_shape(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.build(name).eval()
    spec = zoo.entry(name).input
    clips = np.zeros((2, spec.frames, spec.height, spec.width, 3), np.uint8)
    with torch.inference_mode():
        logits = model(zoo.to_model_input(clips))
    assert logits.shape == (2, _num_labels(name))


def test_unknown_model_names_the_zoo() -> None:
    with pytest.raises(KeyError, match="mini_c3d"):
        zoo.build("resnet_9000")


@pytest.mark.parametrize("name", MOTION_MODELS)
def test_model_card_matches_the_weights(name: str) -> None:
    card = zoo.load_card(name)
    weights = zoo.weights_path(name)
    assert card["labels"] == dataset.CLASS_NAMES
    assert card["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert weights.stat().st_size < 5_000_000
    assert card["accuracy"] >= 0.9
    spec = zoo.entry(name).input
    assert (card["input"]["frames"], card["input"]["height"], card["input"]["width"]) == spec.frame_shape
    model = zoo.load_trained(name)
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bundled_sample_is_classified_correctly() -> None:
    """The demo clip (npy and its lossless mkv) is a test clip the served model gets right."""
    clip = np.load(SAMPLE, allow_pickle=False)
    assert clip.shape == (16, 112, 112, 3) and clip.dtype == np.uint8
    assert np.array_equal(decode_lossless(SAMPLE.with_suffix(".mkv").read_bytes()), clip)
    with torch.inference_mode():
        label = int(zoo.load_trained("mini_c3d")(zoo.to_model_input(clip[None])).argmax(1))
    assert dataset.CLASS_NAMES[label] == dataset.SAMPLE_CLASS


def test_one_frame_is_not_enough() -> None:
    """The classes are motions: the trained model is at chance on a clip of one repeated frame."""
    clips, labels = dataset.generate_split("test", n_per_class=10, seed=1)
    still = np.repeat(clips[:, 8:9], clips.shape[1], axis=1)
    model = zoo.load_trained("mini_c3d")
    with torch.inference_mode():
        moving = (model(zoo.to_model_input(clips)).argmax(1).numpy() == labels).mean()
        frozen = (model(zoo.to_model_input(still)).argmax(1).numpy() == labels).mean()
    assert moving >= 0.9 and frozen <= 0.3


def test_kernels_name_the_torch_build_the_instruction_set_and_the_processor_the_answers_depend_on():
    signature = zoo.kernels("cpu")
    assert signature.startswith(f"torch {torch.__version__}, cpu {torch.backends.cpu.get_cpu_capability()}")
    assert signature.endswith(zoo.cpu_name())


def test_the_processor_is_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                       "model name\t: AMD EPYC\n\nprocessor\t: 1\ncpu family\t: 25\nmodel\t\t: 17\n")
    assert zoo.cpu_name(cpuinfo) == "AMD EPYC family 25 model 17"
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")  # aarch64 names no model
    assert zoo.cpu_name(cpuinfo) == "" and zoo.cpu_name(tmp_path / "missing") == ""
