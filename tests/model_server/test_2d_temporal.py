"""The ImageNet backbone (offline weights) and the 2D-CNN-plus-time models built on it: lrcn and tsm."""

from __future__ import annotations

import cv2
import pytest
import skimage.data
import torch
from torch import nn

from model_server.architectures import backbones
from model_server.architectures.lrcn import LRCN
from model_server.architectures.tsm import TSM, ShiftedMBConv, temporal_shift

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def imagenet_model() -> nn.Module:
    return backbones.efficientnet_lite("efficientnet_lite0", pretrained=True).eval()


def test_pretrained_weights_are_loaded_offline(imagenet_model: nn.Module) -> None:
    path = backbones.pretrained_weights_path("efficientnet_lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    loaded = imagenet_model.state_dict()
    for key in ("_conv_stem.weight", "_blocks.3._depthwise_conv.weight", "_fc.weight", "_bn0.running_mean"):
        assert torch.equal(loaded[key], state[key])
    fresh = backbones.efficientnet_lite("efficientnet_lite0", pretrained=False).state_dict()
    assert not torch.equal(fresh["_conv_stem.weight"], state["_conv_stem.weight"])
    assert torch.all(fresh["_bn0.running_mean"] == 0) and not torch.all(state["_bn0.running_mean"] == 0)


def test_imagenet_model_sees_a_cat(imagenet_model: nn.Module) -> None:
    image = cv2.resize(skimage.data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    mean = torch.tensor(backbones.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(backbones.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        probs = imagenet_model((x - mean) / std).softmax(1)[0]
    assert int(probs.argmax()) in CAT_CLASSES
    assert float(probs[list(CAT_CLASSES)].sum()) > 0.8


@pytest.mark.parametrize(("stages", "channels", "side"), [(2, 24, 28), (3, 40, 14), (4, 80, 7)])
def test_truncated_features(stages: int, channels: int, side: int) -> None:
    features, mean, std = backbones.efficientnet_lite_features("efficientnet_lite0", stages)
    assert (mean, std) == (backbones.IMAGENET_MEAN, backbones.IMAGENET_STD)
    assert features.out_channels == channels and features.stride == 112 // side
    with torch.inference_mode():
        assert features.eval()(torch.zeros(1, 3, 112, 112)).shape == (1, channels, side, side)


def test_temporal_shift_moves_one_eighth_each_way() -> None:
    n, t, c, h, w = 2, 4, 16, 3, 3
    x = torch.randn(n, t, c, h, w)
    out = temporal_shift(x.reshape(n * t, c, h, w), segments=t).view(n, t, c, h, w)
    fold = c // 8
    # Channels [0, fold): frame i holds frame i+1; the last frame is zero-padded.
    assert torch.equal(out[:, :-1, :fold], x[:, 1:, :fold])
    assert torch.all(out[:, -1, :fold] == 0)
    # Channels [fold, 2·fold): frame i holds frame i−1; the first frame is zero-padded.
    assert torch.equal(out[:, 1:, fold : 2 * fold], x[:, :-1, fold : 2 * fold])
    assert torch.all(out[:, 0, fold : 2 * fold] == 0)
    # The other 3/4 of the channels stay in place; the clips of the batch do not mix.
    assert torch.equal(out[:, :, 2 * fold :], x[:, :, 2 * fold :])


def test_shifted_block_is_residual_and_matches_the_package_block() -> None:
    model = TSM().eval()
    shifted = [b for b in model.blocks if isinstance(b, ShiftedMBConv)]
    assert len(shifted) == 4  # the residual blocks of stages 2, 3 and 4
    block = shifted[0]
    x = torch.randn(2 * model.segments, block.block._block_args.input_filters, 7, 7)
    with torch.inference_mode():
        # With nothing shifted, the wrapper is exactly the package's own block: x + F(x).
        unshifted = ShiftedMBConv(block.block, model.segments, fold_div=10**6)
        assert torch.allclose(unshifted(x), block.block(x), atol=1e-5)
        # With the shift, only the residual branch sees other frames: x + F(shift(x)).
        expected = x + (block.block(temporal_shift(x, model.segments)) - temporal_shift(x, model.segments))
        assert torch.allclose(block(x), expected, atol=1e-5)


@pytest.mark.parametrize("builder", [LRCN, TSM])
def test_forward_shape_and_frozen_stem(builder: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = builder()
    x = torch.rand(2, 3, 16, 112, 112) * 255
    model.train()
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    # The frozen, pretrained stem keeps its ImageNet weights and statistics, and gets no gradient.
    assert all(not p.requires_grad and p.grad is None for p in model.frozen.parameters())
    assert not model.frozen[1].training and not model.frozen_blocks.training
    assert model.frozen[0].weight.abs().sum() > 0
    assert all(p.grad is not None for p in model.blocks.parameters())
    with torch.inference_mode():
        assert model.eval()(x).shape == (2, 10)


def test_models_use_the_pretrained_backbone() -> None:
    state = torch.load(backbones.pretrained_weights_path(), map_location="cpu", weights_only=True)
    for model in (LRCN(), TSM()):
        assert torch.equal(model.frozen[0].weight, state["_conv_stem.weight"])
