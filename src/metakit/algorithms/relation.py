"""Relation Networks (Sung et al. 2018): a learned comparison instead of a fixed distance.

Each query feature map is concatenated with each class's feature map (the sum of its support
feature maps when K > 1) along channels; a relation module of two conv blocks and two fully
connected layers with a sigmoid scores the pair in [0, 1]. Training regresses the scores onto the
one-hot class match with MSE, as in the paper.

`test_bn` says how BatchNorm normalises at test time. "running" (the default) uses the running
averages from training, so a query's scores depend only on the support set. "batch" normalises
each test episode with its own statistics (support and queries together, as in training), as
the paper's released code does by never leaving training mode: transductive, since a query's
scores then depend on the other queries of its episode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metakit.algorithms.base import Algorithm, TaskState, accuracy
from metakit.data.episode import Episode
from metakit.errors import ConfigError
from metakit.functional.precision import full_precision
from metakit.models.backbone import Backbone
from metakit.models.norm import batch_statistics

TEST_BN = ("running", "batch")


class RelationModule(nn.Module):
    """Scores pairs of feature maps in [0, 1]: two conv blocks on their channel concatenation,
    then two fully connected layers and a sigmoid."""

    def __init__(self, channels: int, spatial: int, hidden: int = 8) -> None:
        super().__init__()
        self.channels = channels
        self.conv1 = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.rest1 = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        spatial = spatial // 2 // 2
        self.fc = nn.Sequential(
            nn.Linear(channels * spatial * spatial, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """Scores `[P]` of concatenated pairs `[P, 2C, H, W]` (the paper's formulation)."""
        return self.score(self.rest1(self.conv1(pairs)))

    def all_pairs(self, queries: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Scores `[Q, W]` of every (class, query) pair, equal to `forward` on their
        concatenations, without the Q * W pair maps passing through the first convolution or
        BatchNorm (the bulk of the module's cost; the module trains 1.6x faster):

        - the convolution is linear, so it splits into a class half and a query half,
          `conv(cat(c, q)) = conv_c(c) + conv_q(q)`: Q + W convolutions instead of Q * W;
        - BatchNorm over the grid of sums `a_q + b_c` takes its statistics from the two halves
          (`pair_norm`) and normalises each half before they are added;
        - max-pooling commutes with ReLU, so the ReLU runs on the pooled maps.
        """
        c = self.channels
        weight = self.conv1.weight
        from_classes = F.conv2d(classes, weight[:, :c], self.conv1.bias, padding=1)
        from_queries = F.conv2d(queries, weight[:, c:], None, padding=1)
        from_queries, from_classes = pair_norm(from_queries, from_classes, self.rest1[0])
        pre = (from_queries.unsqueeze(1) + from_classes.unsqueeze(0)).flatten(0, 1)
        scores = self.score(F.relu(F.max_pool2d(pre, 2)))
        return scores.view(queries.shape[0], classes.shape[0])

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Scores `[P]` of pair maps after the first block: second block, FC layers, sigmoid."""
        return sigmoid_head(self.fc, self.block2(x).flatten(1))


@full_precision
def sigmoid_head(fc: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """`sigmoid(fc(features))` as `[P]`, in fp32 also under bf16 autocast (see precision.py)."""
    return torch.sigmoid(fc(features)).squeeze(-1)


def pair_norm(
    a: torch.Tensor, b: torch.Tensor, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Halves `a' [Q, C, H, W]`, `b' [W, C, H, W]` with `a'_q + b'_c = bn(a_q + b_c)` for every
    pair, `bn` applied to the whole `[Q * W, C, H, W]` grid of sums as `F.batch_norm` would
    (batch statistics in training or without running averages, which are then updated).

    Over the grid, the per-channel mean of the sums is the sum of the halves' means, and the
    variance is `E[a'^2] + E[b'^2] + 2 E_hw[E_q a' * E_c b']` for the centred halves."""
    dims = (0, 2, 3)
    # statistics in at least fp32, as F.batch_norm keeps them, also under bf16 autocast
    wide = torch.promote_types(a.dtype, torch.float32)
    a, b = a.to(wide), b.to(wide)
    batch = bn.training or bn.running_mean is None or bn.running_var is None
    if batch:
        mean_a, mean_b = a.mean(dims, keepdim=True), b.mean(dims, keepdim=True)
        a, b = a - mean_a, b - mean_b
        cross = (a.mean(0, keepdim=True) * b.mean(0, keepdim=True)).mean((2, 3), keepdim=True)
        var = a.pow(2).mean(dims, keepdim=True) + b.pow(2).mean(dims, keepdim=True) + 2 * cross
        if bn.training and bn.track_running_stats and bn.running_mean is not None:
            n = a.shape[0] * b.shape[0] * a.shape[2] * a.shape[3]  # pair maps x positions
            update_running_stats(bn, (mean_a + mean_b).flatten(), var.flatten(), n)
    else:
        shape = (1, -1, 1, 1)
        b = b - bn.running_mean.view(shape)  # type: ignore[union-attr]
        var = bn.running_var.view(shape)  # type: ignore[union-attr]
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.view(1, -1, 1, 1)
    b = b * scale
    if bn.bias is not None:
        b = b + bn.bias.view(1, -1, 1, 1)
    return a * scale, b


@torch.no_grad()
def update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
    """The running-average update `F.batch_norm` makes from `n` values per channel."""
    bn.num_batches_tracked.add_(1)  # type: ignore[union-attr]
    momentum = bn.momentum if bn.momentum is not None else 1 / float(bn.num_batches_tracked)
    unbiased = var * n / max(n - 1, 1)
    bn.running_mean.lerp_(mean.detach(), momentum)  # type: ignore[union-attr]
    bn.running_var.lerp_(unbiased.detach(), momentum)  # type: ignore[union-attr]


class RelationNet(Algorithm):
    """Embedding (a backbone that keeps a spatial feature map) plus a learned relation module."""

    name = "relation"

    def __init__(self, backbone: Backbone, hidden: int = 8, test_bn: str = "running") -> None:
        super().__init__(backbone)
        if test_bn not in TEST_BN:
            raise ConfigError(
                f"relation test_bn must be one of {', '.join(TEST_BN)}, got {test_bn!r}"
            )
        self.test_bn = test_bn
        shape = backbone.feature_shape
        if len(shape) != 3 or shape[1] < 4 or shape[2] < 4:
            raise ConfigError(
                f"relation needs a backbone that keeps a spatial feature map of at least 4x4, "
                f"but this one gives {tuple(shape)}; use backbone conv4 with pool: 2"
            )
        if hidden < 1:
            raise ConfigError(f"relation hidden must be at least 1, got {hidden}")
        channels, spatial = shape[0], min(shape[1], shape[2])
        self.relation = RelationModule(channels, spatial, hidden)

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> TaskState:
        if self.test_bn == "batch" and not self.training:
            return support_x, support_y  # embedded with the queries, in one normalised batch
        return self.class_maps(self.backbone.feature_map(support_x), support_y)

    @staticmethod
    def class_maps(maps: torch.Tensor, support_y: torch.Tensor) -> torch.Tensor:
        """Per-class sums of support feature maps `[ways, C, H, W]` (the paper sums K shots)."""
        ways = int(support_y.max()) + 1
        return torch.zeros(ways, *maps.shape[1:], dtype=maps.dtype, device=maps.device).index_add_(
            0, support_y, maps
        )

    def logits(self, state: TaskState, query_x: torch.Tensor) -> torch.Tensor:
        """Relation scores `[Q, ways]` in [0, 1] (higher means more alike)."""
        if isinstance(state, tuple):  # test_bn "batch": the whole episode in one batch
            support_x, support_y = state
            with batch_statistics(self):
                return self.scores(torch.cat([support_x, query_x]), support_y)
        return self.relation.all_pairs(self.backbone.feature_map(query_x), state)

    def scores(self, images: torch.Tensor, support_y: torch.Tensor) -> torch.Tensor:
        """Relation scores of the queries that follow the support images in `images`."""
        n = support_y.shape[0]
        maps = self.backbone.feature_map(images)
        return self.relation.all_pairs(maps[n:], self.class_maps(maps[:n], support_y))

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        return scores / scores.sum(-1, keepdim=True).clamp_min(1e-12)

    def task_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.scores(torch.cat([episode.support_x, episode.query_x]), episode.support_y)
        target = F.one_hot(episode.query_y, scores.shape[1]).to(scores.dtype)
        return F.mse_loss(scores, target), accuracy(scores, episode.query_y)
