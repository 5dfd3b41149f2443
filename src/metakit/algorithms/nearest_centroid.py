"""Nearest-centroid classification on any trained backbone's features ("SimpleShot").

Wang et al. 2019 showed that a plain nearest-centroid rule on (normalised) features of a trained
backbone is a strong few-shot baseline; this lets every run, whatever its training method, be
evaluated that way (`metakit eval RUN --method nearest-centroid`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from metakit.algorithms.base import Algorithm
from metakit.algorithms.protonet import prototypes, squared_euclidean
from metakit.data.dataset import ClassDataset
from metakit.data.preprocess import to_float
from metakit.errors import ConfigError, DataError
from metakit.models.backbone import Backbone

Norm = Literal["none", "l2", "cl2n"]
NORMS = ("none", "l2", "cl2n")


class NearestCentroid(Algorithm):
    """Logits are `-||n(f(x)) - c_k||^2` with `c_k` the class means of normalised support
    features. `norm`: `none`; `l2` (unit length); `cl2n` (subtract `center`, the mean training
    feature, then unit length: SimpleShot's best variant)."""

    name = "nearest-centroid"

    def __init__(
        self, backbone: Backbone, norm: Norm = "l2", center: torch.Tensor | None = None
    ) -> None:
        super().__init__(backbone)
        if norm not in NORMS:
            raise ConfigError(f"nearest-centroid norm must be one of {NORMS}, got {norm!r}")
        if norm == "cl2n" and center is None:
            raise ConfigError("norm 'cl2n' needs the mean training feature as `center`")
        self.norm = norm
        self.register_buffer("center", center if norm == "cl2n" else None)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z = self.backbone.embed(x)
        if self.norm == "cl2n":
            z = z - self.center
        return F.normalize(z, dim=-1) if self.norm != "none" else z

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> torch.Tensor:
        return prototypes(self.features(support_x), support_y, int(support_y.max()) + 1)

    def logits(self, state: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        return -squared_euclidean(self.features(query_x), state)


@torch.inference_mode()
def mean_feature(
    backbone: Backbone, data: ClassDataset, limit: int = 5000, batch: int = 500, seed: int = 0
) -> torch.Tensor:
    """Mean embedding of up to `limit` images of a (training) split, drawn with `seed`."""
    if len(data) == 0:
        raise DataError(f"split {data.name!r} has no images to average")
    was_training = backbone.training
    backbone.eval()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:limit]
    device = next(backbone.parameters(), torch.empty(0)).device  # identity: no parameters
    total = torch.zeros(backbone.out_dim, device=device)
    for chunk in order.split(batch):
        total += backbone.embed(to_float(data.images[chunk]).to(device)).sum(0)
    backbone.train(was_training)
    return total / len(order)
