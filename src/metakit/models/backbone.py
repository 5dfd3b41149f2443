"""`Backbone`: a feature extractor made of blocks, plus a separate, replaceable head."""

from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """`features` (an `nn.Sequential` of blocks) → flatten → `head` (identity unless set).

    Keeping blocks separate lets transfer learning freeze the first N of them, and keeping the
    head separate lets metric methods use the embedding while classifiers swap in a new head.
    """

    def __init__(
        self,
        blocks: list[nn.Module],
        out_dim: int,
        num_classes: int = 0,
        channels_last: bool = False,
        feature_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(*blocks)
        self.out_dim = out_dim
        #: shape of one example's output of `features` before flattening, e.g. (64, 7, 7);
        #: methods that compare feature maps (Relation Networks) need it.
        self.feature_shape = feature_shape if feature_shape is not None else (out_dim,)
        self.head: nn.Module = nn.Linear(out_dim, num_classes) if num_classes else nn.Identity()
        # NHWC convolutions are 1.2-1.6x faster for Conv-4 on CPU (measured, oneDNN).
        self.channels_last = channels_last
        if channels_last:
            self.features.to(memory_format=torch.channels_last)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the blocks, `[N, *feature_shape]`, before flattening."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.features(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vector `[N, out_dim]` (before the head)."""
        return self.feature_map(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
