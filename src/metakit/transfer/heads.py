"""Classifier heads fitted on frozen features: linear (logistic regression), cosine, centroid."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from metakit.algorithms.protonet import prototypes, squared_euclidean
from metakit.errors import ConfigError

HeadKind = Literal["linear", "cosine", "centroid"]
HEADS = ("linear", "cosine", "centroid")


class CosineClassifier(nn.Module):
    """Baseline++ head (Chen et al. 2019): `scale * cos(z, w_k)`; the weights act as class
    directions, which reduces intra-class variation compared with a linear layer."""

    def __init__(self, in_dim: int, classes: int, scale: float = 10.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, in_dim) * 0.01)
        self.scale = scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(z, dim=-1) @ F.normalize(self.weight, dim=-1).T


class CentroidHead(nn.Module):
    """Nearest class mean of L2-normalised features (no fitting beyond the means)."""

    def __init__(self, centroids: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("centroids", centroids)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return -squared_euclidean(F.normalize(z, dim=-1), self.centroids)


def make_head(kind: HeadKind, in_dim: int, classes: int, scale: float = 10.0) -> nn.Module:
    """A fresh trainable head (`linear` or `cosine`) for `classes` outputs."""
    if kind == "linear":
        return nn.Linear(in_dim, classes)
    if kind == "cosine":
        return CosineClassifier(in_dim, classes, scale)
    raise ConfigError(f"head must be one of linear, cosine (trainable); got {kind!r}")


def fit_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    ways: int,
    kind: HeadKind = "linear",
    steps: int = 100,
    lr: float = 0.1,
    weight_decay: float = 1e-3,
    scale: float = 10.0,
) -> nn.Module:
    """A head fitted by full-batch Adam on frozen `features` (detached; no backbone gradient).

    The linear head starts at zero, so the fit (a convex logistic regression) is deterministic;
    the cosine head starts at the normalised class means, which is already a good classifier.
    """
    if kind not in HEADS:
        raise ConfigError(f"head must be one of {', '.join(HEADS)}; got {kind!r}")
    z = features.detach()
    if kind == "centroid":
        return CentroidHead(prototypes(F.normalize(z, dim=-1), labels, ways))
    head = make_head(kind, z.shape[-1], ways, scale).to(z.device)
    with torch.no_grad():
        if isinstance(head, nn.Linear):
            head.weight.zero_()
            head.bias.zero_()
        else:
            head.weight.copy_(F.normalize(prototypes(z, labels, ways), dim=-1))
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(head(z), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return head.requires_grad_(False)
