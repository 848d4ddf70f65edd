"""tsm: Temporal Shift Module (Lin, Gan & Han, ICCV 2019) on an ImageNet-pretrained EfficientNet-Lite0.

TSM is a 2D CNN that sees time only through a zero-cost shift: inside the residual branch of a block,
1/8 of the channels are taken from the previous frame, 1/8 from the next frame, the rest stay
("residual shift": the skip path keeps the unshifted input, so spatial features are not harmed). The
per-frame logits are then averaged over the frames (TSN's average consensus). Here the shift is
applied to the input of each residual MBConv block, i.e. before its 1×1 expansion conv and its
depthwise conv, in every residual block of the fine-tuned stages.

Choices for a 2-core CPU budget (a full Lite0 on 16 frames of 112×112 costs minutes per epoch):

- Temporal sampling as in TSM: 8 segments, one frame of each pair (frames 0, 2, …, 14).
- Each frame is 2×2 average-pooled to 56×56 before the backbone. The object (10–29 px there) and its
  motion (≥ 1.5 px per sampled frame) survive; this alone makes the backbone 4× cheaper.
- The backbone is TRUNCATED after stage 4 (stride 16: 80 channels, 3×3 at 56×56 input; stages 5–7
  would add cost and no resolution). The stem and stage 1 are FROZEN (run without autograd, BatchNorm
  kept in eval mode: generic ImageNet edge filters, and their backward pass at 28×28 would dominate
  the cost); stages 2–4 are fine-tuned and hold the 4 shifted residual blocks (one at 14×14, one at
  7×7, two at 3×3), so a frame's features see ±4 sampled frames.
- What did not work: a first version froze stages 1–2 and shifted only at 7×7 and below (stages 3–5)
  with lr 2e-3: its loss rose above chance level (4.0 after one epoch) — too little resolution where
  time is mixed (the object moves 0.2–0.4 cells of a 7×7 map per sampled frame) and too high a
  learning rate for fine-tuning. Shifting at 14×14 (stage 2), the BatchNorm head below and 8 epochs
  at lr 2e-3 is what the weights use (5 epochs at lr 1e-3 only reached 56% test: too slow to start).
- Head: global average AND max pooling (the object covers a small part of the frame; max pooling keeps
  its motion response from being diluted by the static background), BatchNorm, dropout, a
  zero-initialised linear layer per frame, then the average over frames. Without the BatchNorm the
  raw pretrained features gave huge initial logits (loss 4–5.5, above chance, even at warm-up lr).
"""
from __future__ import annotations

import torch
from torch import nn

from model_server.architectures.backbones import efficientnet_lite_features
from model_server.architectures.common import NUM_CLASSES, Normalize


def temporal_shift(x: torch.Tensor, segments: int, fold_div: int = 8) -> torch.Tensor:
    """Shift channels of (N·T)×C×H×W along T: the first C/fold_div channels come from frame t+1
    (shifted backward in time), the next C/fold_div from frame t−1 (shifted forward), the rest stay;
    frames past either end give zeros (TSM's zero padding)."""
    nt, c, h, w = x.shape
    x = x.view(nt // segments, segments, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]  # backward shift: frame t sees frame t+1
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]  # forward shift: frame t sees frame t−1
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


def mbconv_branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The residual branch of an efficientnet_lite_pytorch MBConvBlock (no SE in the Lite models)."""
    if block._block_args.expand_ratio != 1:
        x = block._swish(block._bn0(block._expand_conv(x)))
    x = block._swish(block._bn1(block._depthwise_conv(x)))
    return block._bn2(block._project_conv(x))


class ShiftedMBConv(nn.Module):
    """A residual MBConv block whose branch sees the temporally shifted input: x + F(shift(x))."""

    def __init__(self, block: nn.Module, segments: int, fold_div: int = 8) -> None:
        super().__init__()
        self.block, self.segments, self.fold_div = block, segments, fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + mbconv_branch(self.block, temporal_shift(x, self.segments, self.fold_div))


def _is_residual(block: nn.Module) -> bool:
    args = block._block_args
    stride = args.stride[0] if isinstance(args.stride, (list, tuple)) else args.stride
    return bool(args.id_skip) and stride == 1 and args.input_filters == args.output_filters


class TSM(nn.Module):
    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        segments: int = 8,
        frozen_stages: int = 1,
        stages: int = 4,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        features, mean, std = efficientnet_lite_features("efficientnet_lite0", stages, pretrained)
        self.segments = segments
        self.normalize = Normalize(mean=mean, std=std)
        self.pool = nn.AvgPool2d(2)
        # Frozen part: stem + stages 1..frozen_stages, no shift (its weights never see the task).
        self.frozen = nn.ModuleList([features.conv_stem, features.bn_stem])
        self.act = features.act
        frozen_blocks, tuned_blocks = [], []
        for block, stage in zip(features.blocks, features.stage_of, strict=True):
            if stage <= frozen_stages:
                frozen_blocks.append(block)
            else:
                tuned_blocks.append(ShiftedMBConv(block, segments) if _is_residual(block) else block)
                for module in block.modules():
                    if isinstance(module, nn.BatchNorm2d):
                        module.momentum = 0.1  # the package's TF-style 0.01 adapts too slowly here
        self.frozen_blocks = nn.ModuleList(frozen_blocks)
        self.blocks = nn.ModuleList(tuned_blocks)
        for p in [*self.frozen.parameters(), *self.frozen_blocks.parameters()]:
            p.requires_grad_(False)
        # BatchNorm before the classifier: the pretrained stage outputs are un-normalised (no activation
        # after the projection conv) and their max over space is large; without it the first logits
        # were huge and the loss started far above chance.
        self.head_norm = nn.BatchNorm1d(2 * features.out_channels)
        self.dropout = nn.Dropout(0.3)
        self.classifier = nn.Linear(2 * features.out_channels, num_classes)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def train(self, mode: bool = True) -> TSM:
        super().train(mode)
        self.frozen.eval()  # frozen BatchNorm keeps its ImageNet statistics
        self.frozen_blocks.eval()
        return self

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """N×3×T×H×W (0–255) -> (N·S)×3×H/2×W/2 normalised frames of the S sampled segments."""
        n, _, t, _, _ = x.shape
        step = t // self.segments
        x = x[:, :, ::step][:, :, : self.segments]  # TSM's segment sampling: the first frame of each
        x = self.normalize(x).transpose(1, 2).reshape(n * self.segments, 3, *x.shape[-2:])
        return self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.frames(x)
        with torch.no_grad():
            x = self.act(self.frozen[1](self.frozen[0](x)))
            for block in self.frozen_blocks:
                x = block(x)
        for block in self.blocks:
            x = block(x)
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        logits = self.classifier(self.dropout(self.head_norm(pooled)))  # one prediction per segment
        return logits.view(n, self.segments, -1).mean(dim=1)  # average consensus
