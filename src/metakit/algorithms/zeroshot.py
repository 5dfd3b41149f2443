"""Zero-shot Prototypical Networks (Snell et al. 2017, sec. 2.4): prototypes from class metadata.

Each class comes with a metadata vector `v_k` (here the sentence embedding of an intent's name)
instead of examples. A learned map `g` turns it into the prototype `c_k = g(v_k)`, and queries
are embedded by the backbone `f` and scored against the prototypes as in ProtoNet. When `v_k`
lives in the query embedding space already, `g` is residual and starts as the identity, so the
untrained learner is exactly the "cosine similarity to the embedded class name" baseline and
training can only move away from it as far as the seen classes justify.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from metakit.algorithms.base import Algorithm
from metakit.algorithms.protonet import ProtoNet, prototypes
from metakit.data.episode import Episode
from metakit.errors import ConfigError, DataError
from metakit.models.backbone import Backbone


class ZeroShotProtoNet(ProtoNet):
    """`support_x` holds one metadata vector per class (`[ways, metadata_dim]`, from a
    `MetadataSampler`); `hidden` is the width of g's hidden layer (0: a single linear map)."""

    name = "zeroshot"
    tasks = ("zero-shot",)

    def __init__(
        self,
        backbone: Backbone,
        metadata_dim: int = 0,
        hidden: int = 512,
        distance: Literal["euclidean", "cosine"] = "cosine",
        scale: float | None = None,
        learn_scale: bool = True,
    ) -> None:
        super().__init__(backbone, distance, scale, learn_scale)
        if hidden < 0 or metadata_dim < 0:
            raise ConfigError("zeroshot hidden and metadata_dim must be >= 0")
        dim, out = metadata_dim or backbone.out_dim, backbone.out_dim
        self.metadata_dim = dim
        layers = (
            [nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out)]
            if hidden
            else [nn.Linear(dim, out)]
        )
        self.g = nn.Sequential(*layers)
        self.residual = dim == out
        if self.residual:  # g starts as the identity map: the untrained baseline
            nn.init.zeros_(self.g[-1].weight)
            nn.init.zeros_(self.g[-1].bias)

    def class_prototypes(self, metadata: torch.Tensor) -> torch.Tensor:
        """`g(v)` for metadata vectors `[C, metadata_dim]`."""
        if metadata.dim() != 2 or metadata.shape[-1] != self.metadata_dim:
            raise DataError(
                f"zeroshot expects class metadata [ways, {self.metadata_dim}] as the support "
                f"set, got {list(metadata.shape)}; use a dataset with class metadata "
                "(e.g. clinc150 with support: name)"
            )
        mapped = self.g(metadata)
        return metadata + mapped if self.residual else mapped

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> torch.Tensor:
        ways = int(support_y.max()) + 1
        return prototypes(self.class_prototypes(support_x), support_y, ways)

    def task_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        # not ProtoNet's joint forward pass: support (metadata) and queries (examples) differ
        return Algorithm.task_loss(self, episode)
