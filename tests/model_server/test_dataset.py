"""The motion dataset: deterministic, with splits drawn from disjoint photographs."""

from __future__ import annotations

import numpy as np
import pytest

from model_server import dataset


@pytest.fixture(scope="module")
def val_split() -> tuple[np.ndarray, np.ndarray]:
    return dataset.generate_split("val", n_per_class=2, seed=11)


def test_clips_have_the_model_input_shape(val_split: tuple[np.ndarray, np.ndarray]) -> None:
    clips, labels = val_split
    assert clips.shape == (20, 16, 112, 112, 3) and clips.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.array_equal(np.bincount(labels), [2] * len(dataset.CLASS_NAMES))
    assert len(dataset.CLASS_NAMES) == 10


def test_same_seed_same_bytes(val_split: tuple[np.ndarray, np.ndarray]) -> None:
    again, _ = dataset.generate_split("val", n_per_class=2, seed=11)
    assert again.tobytes() == val_split[0].tobytes()
    other, _ = dataset.generate_split("val", n_per_class=2, seed=12)
    assert other.tobytes() != again.tobytes()


def test_a_clip_does_not_depend_on_how_many_are_generated(val_split: tuple[np.ndarray, np.ndarray]) -> None:
    one, _ = dataset.generate_split("val", n_per_class=1, seed=11)
    assert np.array_equal(one, val_split[0][::2])


def test_clips_move() -> None:
    """Frames differ within a clip: the class lives in the motion, not in one frame."""
    clips, _ = dataset.generate_split("test", n_per_class=1, seed=0)
    moving = np.abs(clips[:, 0].astype(int) - clips[:, -1].astype(int)).mean(axis=(1, 2, 3))
    assert (moving > 1.0).all()


def test_splits_use_disjoint_photographs() -> None:
    photos = {split: set(dataset.split_photos(split)) for split in dataset.SPLITS}
    assert not photos["train"] & photos["val"]
    assert not photos["train"] & photos["test"]
    assert not photos["val"] & photos["test"]
    assert sum(map(len, photos.values())) == len(dataset.PHOTOS) == len(set(dataset.PHOTOS))
    # near-duplicates of a bundled photo would leak across splits
    assert not {"cat", "motorcycle_right"} & set(dataset.PHOTOS)


def test_reference_clips_come_from_their_own_stream() -> None:
    ref = dataset.reference_clips(label=4, n=2)
    assert ref.shape == (2, 16, 112, 112, 3) and ref.dtype == np.uint8
    assert np.array_equal(ref, dataset.reference_clips(label=4, n=2))
    train, _ = dataset.generate_split("train", n_per_class=2, seed=dataset.DEFAULT_REFERENCE_SEED)
    assert not any(np.array_equal(r, t) for r in ref for t in train)
    with pytest.raises(ValueError):
        dataset.reference_clips(label=10, n=1)
