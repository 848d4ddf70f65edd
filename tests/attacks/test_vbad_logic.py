"""V-BAD's pure pieces: partitions (Eq. 3), rectification (Eq. 5), Algorithm 2's transformed loss
and the attack loop on a toy oracle (budget, determinism)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.attacks.conftest import run_on_toy
from worker.attacks.vbad import (
    Pbad,
    PbadParams,
    Srbad,
    Vbad,
    VbadParams,
    pixel_partition,
    random_partition,
    rectify,
    transformed_losses,
    uniform_partition,
)

SHAPE = (16, 112, 112, 3)


def test_uniform_partition_cuts_each_frame_into_8x8_patches_of_all_channels():
    part = uniform_partition(SHAPE, 8)
    assert part.count == 16 * 64
    sizes = np.bincount(part.index.ravel(), minlength=part.count)
    assert (sizes == 14 * 14 * 3).all()
    # a patch never spans two frames, and all channels of a pixel share it
    assert set(np.unique(part.index[3])) == set(range(3 * 64, 4 * 64))
    assert (part.index[..., 0] == part.index[..., 2]).all()


def test_random_partition_deals_equal_groups_and_changes_with_the_draw():
    rng = np.random.default_rng(0)
    first, second = random_partition(SHAPE, 1024, rng), random_partition(SHAPE, 1024, rng)
    assert (np.bincount(first.index.ravel()) == np.prod(SHAPE) // 1024).all()
    assert not np.array_equal(first.index, second.index)


def test_pixel_partition_with_static_tentative_is_plain_nes_on_pixels():
    shape = (2, 4, 4, 3)
    part = pixel_partition(shape)
    weights = np.random.default_rng(1).standard_normal(part.count).astype(np.float32)
    assert np.array_equal(rectify(weights, part, np.ones(shape, np.float32)), weights.reshape(shape))


def test_rectified_sign_is_patch_weight_sign_times_tentative_sign():
    rng = np.random.default_rng(2)
    part = uniform_partition((2, 16, 16, 3), 4)
    signs = np.where(rng.random((2, 16, 16, 3)) < 0.5, -1.0, 1.0).astype(np.float32)
    weights = rng.standard_normal(part.count).astype(np.float32)
    assert np.array_equal(np.sign(rectify(weights, part, signs)), np.sign(weights)[part.index] * signs)


def test_transformed_loss_ranks_kept_samples_and_punishes_lost_ones_equally():
    losses = np.array([0.3, -0.9, 0.8, -0.2, 0.1], dtype=np.float32)
    lost = np.array([False, False, True, False, True])
    ranked = transformed_losses(losses, lost)
    assert ranked[2] == ranked[4] == 0.5  # Algorithm 2: losing the target is the worst outcome
    assert ranked[1] < ranked[3] < ranked[0] < 0.5
    assert ranked.min() == -0.5


@pytest.mark.parametrize("variant", [Srbad(Srbad.Params()), Pbad(PbadParams()),
                                     Vbad(VbadParams(tentative="random"))])
def test_static_and_random_variants_fool_a_linear_model_inside_the_ball(variant, toy_clip):
    oracle, tracker = run_on_toy(variant, toy_clip, budget=3000)
    assert tracker.best.success
    assert oracle.used <= 3000
    assert np.abs(tracker.best.clip.astype(int) - toy_clip).max() <= 12


def test_budget_is_never_exceeded_and_the_same_seed_repeats_every_query(toy_clip):
    hard = {"scale": 2e-5, "bias": 9.0}  # unreachable in the ball: the attack runs out of budget
    first, _ = run_on_toy(Srbad(Srbad.Params(seed=5)), toy_clip, budget=201, **hard)
    second, _ = run_on_toy(Srbad(Srbad.Params(seed=5)), toy_clip, budget=201, **hard)
    other, _ = run_on_toy(Srbad(Srbad.Params(seed=6)), toy_clip, budget=201, **hard)
    assert first.used == 201
    assert first.log == second.log
    assert first.log != other.log
