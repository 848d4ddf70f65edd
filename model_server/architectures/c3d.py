"""c3d: C3D (Tran et al., ICCV 2015, "Learning Spatiotemporal Features with 3D Convolutional Networks"),
scaled down to train on a CPU."""
from __future__ import annotations

import torch
from torch import nn

from model_server.architectures.common import NUM_CLASSES, Normalize, _block


class C3D(nn.Module):
    """C3D: homogeneous 3×3×3 convolutions with 3D max pooling, widths doubling, two FC layers.

    Same layout as the paper's network — conv → pool stages where every convolution is 3×3×3 with
    stride 1, the first pool is spatial only (1×2×2) so early layers keep the temporal signal and later
    pools are 2×2×2, the feature map is flattened (no global pooling) into fc6 → fc7 (ReLU, dropout)
    and a linear classifier — but scaled down for 2 CPU cores:

    - 4 conv stages with one conv each (paper: 5 stages, 8 convs) and widths 16-32-64-128 (paper:
      64-128-256-512-512); fc6/fc7 are 256 wide (paper: 4096).
    - The first convolution has spatial stride 2 (112→56) before pool1 (56→28): the moving objects are
      tens of pixels wide, so the full-resolution first layer of the paper is not needed.
    - BatchNorm after every convolution (the paper has none; it trained with a long SGD schedule on
      Sports-1M, this one has minutes).
    - Plain RGB input, as in the paper (no frame-difference channels, no avg+max pooling trick).
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        widths: tuple[int, int, int, int] = (16, 32, 64, 128),
        fc: int = 256,
    ) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.normalize = Normalize(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))
        self.features = nn.Sequential(
            _block(3, w1, (3, 3, 3), (1, 2, 2)),  # conv1: 16×56×56
            nn.MaxPool3d((1, 2, 2)),  # pool1: 16×28×28
            _block(w1, w2, (3, 3, 3), (1, 1, 1)),  # conv2
            nn.MaxPool3d(2),  # pool2: 8×14×14
            _block(w2, w3, (3, 3, 3), (1, 1, 1)),  # conv3
            nn.MaxPool3d(2),  # pool3: 4×7×7
            _block(w3, w4, (3, 3, 3), (1, 1, 1)),  # conv4
            nn.MaxPool3d(2),  # pool4: 2×3×3
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(w4 * 2 * 3 * 3, fc),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(fc, fc),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(fc, num_classes),  # fc8
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))
