"""r2plus1d: R(2+1)D (Tran et al., CVPR 2018, "A Closer Look at Spatiotemporal Convolutions for Action
Recognition"), scaled down to train on a CPU."""
from __future__ import annotations

import torch
from torch import nn

from model_server.architectures.common import NUM_CLASSES, Normalize, frame_difference


def _mid_channels(cin: int, cout: int, t: int = 3, d: int = 3) -> int:
    """The paper's M_i = ⌊t·d²·N_{i-1}·N_i / (d²·N_{i-1} + t·N_i)⌋: as many parameters as a t×d×d conv."""
    return (t * d * d * cin * cout) // (d * d * cin + t * cout)


class Conv2Plus1D(nn.Sequential):
    """A t×d×d 3D convolution factorised as a spatial 1×d×d conv, BN+ReLU, then a temporal t×1×1 conv."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        mid = _mid_channels(cin, cout)
        st, ss, _ = stride
        super().__init__(
            nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, ss, ss), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), stride=(st, 1, 1), padding=(1, 0, 0), bias=False),
        )


class ResBlock2Plus1D(nn.Module):
    """The ResNet basic block with both convolutions (2+1)D; a strided 1×1×1 projection when needed."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv1 = Conv2Plus1D(cin, cout, stride)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = Conv2Plus1D(cout, cout)
        self.bn2 = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if cin != cout or stride != (1, 1, 1):
            self.shortcut = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class R2Plus1D(nn.Module):
    """R(2+1)D: a residual network whose every 3×3×3 convolution is split into a spatial 1×3×3 conv and
    a temporal 3×1×1 conv with BN+ReLU between them, the intermediate width chosen by the paper's
    formula so that each factorised conv has the parameters of the 3D conv it replaces.

    Scaled down from the paper's R(2+1)D-18 for 2 CPU cores:

    - Stem: (2+1)D as in the paper (spatial 1×7×7 then temporal 3×1×1), but with spatial stride 4
      (112→28) instead of 2: the moving objects are tens of pixels wide.
    - 3 residual stages of one basic block each (paper: 4 stages of 2 blocks), widths 32-64-128
      (paper: 64-128-256-512); time is halved twice (16→4), space once more (28→14→7).
    - Input is RGB plus the frame-to-frame difference (6 channels), and the head pools average AND
      max over space-time (paper: RGB in, global average pool). On plain RGB with average pooling
      this network stayed at chance for the whole CPU training budget: the classes are the motion
      of a small object over a static photo, a small part of what the network sees. The same two
      changes made mini_c3d learn; C3D in this zoo keeps the paper's plain RGB input.
    """

    def __init__(
        self, num_classes: int = NUM_CLASSES, stem: int = 24, widths: tuple[int, int, int] = (32, 64, 128)
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.normalize = Normalize(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))
        self.stem = nn.Sequential(
            nn.Conv3d(6, stem, (1, 7, 7), stride=(1, 4, 4), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(stem),
            nn.ReLU(inplace=True),
            nn.Conv3d(stem, stem, (3, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(stem),
            nn.ReLU(inplace=True),
        )  # 16×28×28
        self.layers = nn.Sequential(
            ResBlock2Plus1D(stem, w1, (1, 2, 2)),  # 16×14×14
            ResBlock2Plus1D(w1, w2, (2, 2, 2)),  # 8×7×7
            ResBlock2Plus1D(w2, w3, (2, 1, 1)),  # 4×7×7
        )
        self.classifier = nn.Linear(2 * w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.layers(self.stem(torch.cat([x, frame_difference(x)], dim=1)))
        return self.classifier(torch.cat([x.mean(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))], dim=1))
