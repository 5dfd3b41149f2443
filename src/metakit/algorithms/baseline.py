"""Baseline and Baseline++ of Chen et al. 2019 ("A Closer Look at Few-shot Classification").

Training is ordinary supervised learning of the backbone with a classifier over *all* training
classes (minibatches from `data/batches.py`, global labels). At test time the classifier is
dropped and a new head is fitted on each episode's frozen support features: a linear head
(Baseline) or a cosine head (Baseline++, `head: cosine`, also used during pretraining). A run
of this algorithm is also the pretrained source model of `metakit transfer`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from metakit.algorithms.base import Algorithm, accuracy
from metakit.data.episode import Episode
from metakit.errors import ConfigError, DataError
from metakit.models.backbone import Backbone
from metakit.transfer.heads import make_head
from metakit.transfer.learner import Fitted, extract, fitted_logits


class Baseline(Algorithm):
    name = "baseline"
    needs_grad_to_adapt = True  # the new head is fitted by gradient descent
    #: trained on labelled minibatches over all classes rather than on episodes
    supervised: ClassVar[bool] = True

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int = 0,
        head: str = "linear",
        scale: float = 10.0,
        finetune_steps: int = 100,
        finetune_lr: float = 0.1,
    ) -> None:
        super().__init__(backbone)
        if head not in ("linear", "cosine"):
            raise ConfigError(f"baseline head must be linear or cosine, got {head!r}")
        if num_classes < 1:
            raise ConfigError(
                "baseline needs num_classes (the number of training classes); the trainer "
                "fills it in from the training split"
            )
        self.head_kind, self.scale = head, scale
        self.num_classes = num_classes
        self.classifier = make_head(head, backbone.out_dim, num_classes, scale)  # type: ignore[arg-type]
        self.finetune_steps, self.finetune_lr = finetune_steps, finetune_lr

    def meta_loss(self, batch: Episode) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy over all classes on every example of `batch` (global labels)."""
        x = torch.cat([batch.support_x.flatten(0, -4), batch.query_x.flatten(0, -4)])
        y = torch.cat([batch.support_y.flatten(), batch.query_y.flatten()])
        if int(y.max()) >= self.num_classes:
            raise DataError(
                f"label {int(y.max())} is outside the {self.num_classes} classes of this "
                "baseline's classifier; train it on the split it was built for"
            )
        logits = self.classifier(self.backbone.embed(x))
        loss = F.cross_entropy(logits, y)
        return loss, {"loss": loss.item(), "accuracy": accuracy(logits, y).item()}

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Fitted:
        return extract(
            self.backbone, support_x, support_y, self.head_kind,  # type: ignore[arg-type]
            self.finetune_steps, self.finetune_lr, self.scale,
        )  # fmt: skip

    def logits(self, state: Fitted, query_x: torch.Tensor) -> torch.Tensor:
        return fitted_logits(state, query_x)
