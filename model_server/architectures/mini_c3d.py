"""mini_c3d: the spine's small C3D-style 3D CNN."""
from __future__ import annotations

import torch
from torch import nn

from model_server.architectures.common import NUM_CLASSES, Normalize, _block, frame_difference


class MiniC3D(nn.Module):
    """A small C3D-style network sized for 2 CPU cores.

    - Input is RGB plus the frame-to-frame difference. The classes are motions of a small object
      over a textured, static background; without the difference channels the network sat at chance
      for several epochs (the motion signal is a small part of what it sees), with them it learns.
    - The stem cuts 112×112 to 28×28 at once (a 4×4 patchify, no temporal mixing): the objects are
      tens of pixels wide, so fine detail is not needed, and this keeps training to minutes on a CPU.
    - The 3×3×3 blocks see motion; time is halved twice, so the last block spans the whole clip.
    - Global average AND max pooling: the object covers a fraction of the frame, and max pooling
      keeps its response from being diluted by the background (it converged much faster).
    """

    def __init__(
        self, num_classes: int = NUM_CLASSES, widths: tuple[int, int, int, int] = (24, 48, 96, 160)
    ) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.normalize = Normalize(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))
        self.features = nn.Sequential(
            _block(6, w1, (1, 4, 4), (1, 4, 4)),  # T×28×28
            _block(w1, w2, (3, 3, 3), (1, 2, 2)),  # T×14×14
            _block(w2, w3, (3, 3, 3), (2, 2, 2)),  # T/2×7×7
            _block(w3, w4, (3, 3, 3), (2, 1, 1)),  # T/4×7×7
        )
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(2 * w4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = torch.cat([x, frame_difference(x)], dim=1)
        x = self.features(x)
        pooled = torch.cat([x.mean(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))], dim=1)
        return self.classifier(self.dropout(pooled))
