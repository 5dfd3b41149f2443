"""Siamese Networks (Koch et al. 2015): learn verification ("same class?"), then classify by it.

Twin embeddings with shared weights are compared by a weighted L1 distance: an MLP on
`|f(a) - f(b)|` whose first layer weighs each component, ending in a sigmoid that gives
P(same class). Training uses balanced same/different pairs drawn from each training episode's
examples with binary cross-entropy. An N-way K-shot query takes the class whose support
is the most likely to be the same class. With K > 1 shots, the test-time setting
`test_shots_mean` says how a class's support examples are combined: one comparison with the
class-mean embedding (`embedding`, the default: a prototype, as in ProtoNet), the mean
same-class probability (`probability`, the paper's rule) or the mean same-class logit (`logit`:
the geometric mean of the odds). On Omniglot val (20-way and 5-way 5-shot, 300 episodes, one
trained model) `embedding` scored 97.12 / 99.37 against the paper's rule's 96.19 / 99.14, hence
the default. With one shot all three are the same rule.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from metakit.algorithms.base import Algorithm
from metakit.data.augment import random_affine
from metakit.data.episode import Episode
from metakit.data.pairs import balanced_pairs
from metakit.errors import ConfigError, DataError
from metakit.models.backbone import Backbone

ShotsMean = Literal["probability", "logit", "embedding"]
TEST_SHOTS_MEAN: tuple[ShotsMean, ...] = get_args(ShotsMean)


class Siamese(Algorithm):
    """`hidden: 0` is the paper's head (one weighted L1 layer → sigmoid); `hidden > 0` adds a
    hidden ReLU layer. `augment: true` applies Koch et al.'s affine distortions in training.
    `test_shots_mean` says how K > 1 support examples of a class are averaged (module docstring)."""

    name = "siamese"

    def __init__(
        self,
        backbone: Backbone,
        hidden: int = 0,
        augment: bool = False,
        test_shots_mean: ShotsMean = "embedding",
    ) -> None:
        super().__init__(backbone)
        if hidden < 0:
            raise ConfigError(f"siamese hidden must be 0 (no hidden layer) or more, got {hidden}")
        if test_shots_mean not in TEST_SHOTS_MEAN:
            raise ConfigError(
                f"siamese test_shots_mean must be one of {', '.join(TEST_SHOTS_MEAN)}, "
                f"got {test_shots_mean!r}"
            )
        self.test_shots_mean = test_shots_mean
        dim = backbone.out_dim
        layers: list[nn.Module] = (
            [nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)]
            if hidden
            else [nn.Linear(dim, 1)]
        )
        self.head = nn.Sequential(*layers)
        self.augment = augment

    def same_logit(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Logit of P(same class) for embedding pairs `a[i], b[i]` (broadcasting)."""
        return self.head((a - b).abs()).squeeze(-1)

    def adapt(
        self, support_x: torch.Tensor, support_y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if support_x.shape[0] == 0:
            raise DataError(
                "siamese compares queries with support examples, so it needs at least one "
                "support example per class (shots >= 1)"
            )
        return self.backbone.embed(support_x), support_y

    def logits(
        self, state: tuple[torch.Tensor, torch.Tensor], query_x: torch.Tensor
    ) -> torch.Tensor:
        """Same-class probability `[Q, ways]` of each query with each class (`test_shots_mean`)."""
        support, support_y = state
        return self.score(self.backbone.embed(query_x), support, support_y)

    def score(
        self, queries: torch.Tensor, support: torch.Tensor, support_y: torch.Tensor
    ) -> torch.Tensor:
        ways = int(support_y.max()) + 1
        onehot = F.one_hot(support_y, ways).to(support.dtype)  # [S, ways]
        per_class = onehot / onehot.sum(0).clamp_min(1)  # averaging weights
        if self.test_shots_mean == "embedding":
            prototypes = per_class.T @ support  # [ways, D]
            return torch.sigmoid(self.same_logit(queries.unsqueeze(1), prototypes.unsqueeze(0)))
        logit = self.same_logit(queries.unsqueeze(1), support.unsqueeze(0))  # [Q, S]
        if self.test_shots_mean == "logit":
            return torch.sigmoid(logit @ per_class)
        return torch.sigmoid(logit) @ per_class

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        return scores / scores.sum(-1, keepdim=True).clamp_min(1e-12)

    def task_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([episode.support_x, episode.query_x])
        y = torch.cat([episode.support_y, episode.query_y])
        if self.augment and self.training:
            x = random_affine(x)
        z = self.backbone.embed(x)
        first, second, same = balanced_pairs(y)
        logit = self.same_logit(z[first], z[second])
        accuracy = ((logit > 0).to(same.dtype) == same).float().mean()  # pair verification
        return F.binary_cross_entropy_with_logits(logit, same.to(logit.dtype)), accuracy
