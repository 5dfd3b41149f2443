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
        return self.head(self.conv1(pairs))

    def all_pairs(self, queries: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Scores `[Q, W]` of every (class, query) pair, equal to `forward` on their
        concatenations. The first convolution is linear in its input, so it splits into a class
        half and a query half: `conv(cat(c, q)) = conv_c(c) + conv_q(q)`. That runs Q + W
        convolutions instead of Q * W, the bulk of the module's cost."""
        c = self.channels
        weight = self.conv1.weight
        from_classes = F.conv2d(classes, weight[:, :c], self.conv1.bias, padding=1)
        from_queries = F.conv2d(queries, weight[:, c:], None, padding=1)
        pre = (from_queries.unsqueeze(1) + from_classes.unsqueeze(0)).flatten(0, 1)
        return self.head(pre).view(queries.shape[0], classes.shape[0])

    def head(self, pre: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.rest1(pre))
        return torch.sigmoid(self.fc(x.flatten(1))).squeeze(-1)


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
