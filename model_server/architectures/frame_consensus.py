"""frame_consensus: an image classifier applied to every frame, softmax averaged over time (TSN-style).

`FrameConsensus` turns a 2D ImageNet classifier into a video model that follows the zoo's contract
(float N×3×T×H×W holding raw 0–255 RGB in, N×K scores out):

1. every frame is resized to the image model's input size (112 → 224, bilinear, no antialiasing —
   upsampling needs none) and normalised with the ImageNet mean/std, both INSIDE the model;
2. the image model gives per-frame logits, turned into per-frame probabilities by a softmax;
3. the video's class distribution is the mean of the T per-frame distributions (the "average"
   segmental consensus of TSN, Wang et al., ECCV 2016, taken after the softmax).

`forward` returns log(mean probability): the handler's softmax of it gives back exactly the averaged
distribution (softmax(log p) = p when p sums to 1), so the oracle's top-1 probability is the mean
per-frame probability of that class.

Frames go through the image model `frame_chunk` at a time: a 48-clip batch is 768 frames of 224×224,
whose activations would not fit comfortably in a CPU worker's memory at once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model_server.architectures.backbones import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite
from model_server.architectures.common import Normalize


class FrameConsensus(nn.Module):
    def __init__(self, image_model: nn.Module, image_size: int = 224, frame_chunk: int = 64) -> None:
        super().__init__()
        self.image_model = image_model
        self.image_size = image_size
        self.frame_chunk = frame_chunk
        self.normalize = Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)  # no weights: not saved

    def frame_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """N×3×T×H×W (0–255) -> N×T×K per-frame class probabilities."""
        n, c, t, h, w = x.shape
        frames = self.normalize(x).transpose(1, 2).reshape(n * t, c, h, w)
        probabilities = []
        for start in range(0, n * t, self.frame_chunk):
            chunk = frames[start : start + self.frame_chunk]
            if (h, w) != (self.image_size, self.image_size):
                chunk = F.interpolate(chunk, size=(self.image_size, self.image_size), mode="bilinear",
                                      align_corners=False)  # fmt: skip
            probabilities.append(torch.softmax(self.image_model(chunk).float(), dim=1))
        return torch.cat(probabilities).view(n, t, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.frame_probabilities(x).mean(dim=1).clamp_min(1e-12))


def effnet_lite0_consensus(pretrained: bool = False) -> FrameConsensus:
    """The zoo's `effnet_lite0_imagenet`: EfficientNet-Lite0 (ImageNet, 1000 classes) on every frame.

    The zoo builds it with `pretrained=False` and the handler loads model_server/weights/
    effnet_lite0_imagenet.pt (an fp16 export of the packaged weights, written by
    `python -m model_server.imagenet card`); `pretrained=True` loads the packaged fp32 file directly.
    """
    return FrameConsensus(efficientnet_lite("efficientnet_lite0", pretrained=pretrained))
