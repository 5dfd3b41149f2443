"""Prototypical Networks (Snell et al. 2017): classify by distance to class-mean embeddings."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from metakit.algorithms.base import Algorithm, accuracy
from metakit.data.episode import Episode
from metakit.errors import ConfigError
from metakit.functional.precision import full_precision
from metakit.models.backbone import Backbone


def prototypes(z: torch.Tensor, y: torch.Tensor, ways: int) -> torch.Tensor:
    """Class means `[ways, D]` of embeddings `z` `[N, D]` with labels `y` in `0..ways-1`."""
    sums = torch.zeros(ways, z.shape[-1], dtype=z.dtype, device=z.device).index_add_(0, y, z)
    counts = torch.bincount(y, minlength=ways).clamp_min(1).to(z.dtype)
    return sums / counts.unsqueeze(1)


@full_precision
def squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise `||a_i - b_j||^2`, `[len(a), len(b)]`, via one matrix product."""
    d = (
        a.pow(2).sum(-1, keepdim=True)
        - 2 * a @ b.transpose(-1, -2)
        + b.pow(2).sum(-1).unsqueeze(-2)
    )
    return d.clamp_min(0)


@full_precision
def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(-1, -2)


class ProtoNet(Algorithm):
    """Logits are `-scale * ||f(x) - c_k||^2` (squared Euclidean) or `scale * cos(f(x), c_k)`.

    `scale` defaults to 1 for Euclidean and 10 for cosine (cosine logits live in [-1, 1] and are
    too flat otherwise); `learn_scale` makes it a trained temperature.
    """

    name = "protonet"

    def __init__(
        self,
        backbone: Backbone,
        distance: Literal["euclidean", "cosine"] = "euclidean",
        scale: float | None = None,
        learn_scale: bool = False,
    ) -> None:
        super().__init__(backbone)
        if distance not in ("euclidean", "cosine"):
            raise ConfigError(
                f"protonet distance must be 'euclidean' or 'cosine', got {distance!r}"
            )
        scale = (1.0 if distance == "euclidean" else 10.0) if scale is None else scale
        if scale <= 0:
            raise ConfigError(f"protonet scale must be positive, got {scale}")
        self.distance = distance
        log_scale = torch.tensor(math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> torch.Tensor:
        return prototypes(self.backbone.embed(support_x), support_y, int(support_y.max()) + 1)

    def logits(self, state: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        return self.score(self.backbone.embed(query_x), state)

    def score(self, queries: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
        scale = self.log_scale.exp()
        if self.distance == "euclidean":
            return -scale * squared_euclidean(queries, protos)
        return scale * cosine_similarity(queries, protos)

    def task_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        # One forward pass over support and query together (as in the paper's code): BatchNorm
        # sees the whole episode, and one large batch is faster than two small ones.
        n = episode.support_x.shape[0]
        z = self.backbone.embed(torch.cat([episode.support_x, episode.query_x]))
        protos = prototypes(z[:n], episode.support_y, int(episode.support_y.max()) + 1)
        logits = self.score(z[n:], protos)
        return F.cross_entropy(logits, episode.query_y), accuracy(logits, episode.query_y)
