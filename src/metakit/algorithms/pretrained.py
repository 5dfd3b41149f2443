"""The "pretrained" baseline of Finn et al. 2017 for meta-regression.

One network is trained jointly on the points of all training tasks (ordinary regression, no
inner loop), then fine-tuned on each test task's support points with SGD, exactly as MAML is at
test time. The paper tuned the fine-tuning step size; here it is `test_inner_lr`, to be chosen
on the val split (`benchmarks/gradient_meta.py` does that). Classification episodes relabel
classes in every episode, so joint training over them is meaningless: use the transfer module.
"""

from __future__ import annotations

import torch

from metakit.algorithms.maml import MAML, Task
from metakit.data.episode import Episode
from metakit.errors import ConfigError
from metakit.models.backbone import Backbone
from metakit.models.norm import BNMode


class Pretrained(MAML):
    name = "pretrained"
    tasks = ("regression",)

    def __init__(
        self,
        backbone: Backbone,
        test_inner_steps: int = 10,
        test_inner_lr: float = 0.01,
        bn: BNMode = "transductive",
        task: Task = "regression",
    ) -> None:
        if task != "regression":
            raise ConfigError(
                "the pretrained baseline is for regression tasks (episode labels change between "
                "classification episodes); for classification use transfer learning"
            )
        super().__init__(
            backbone,
            inner_lr=test_inner_lr,
            test_inner_steps=test_inner_steps,
            test_inner_lr=test_inner_lr,
            bn=bn,
            task=task,
        )

    def meta_loss(self, batch: Episode) -> tuple[torch.Tensor, dict[str, float]]:
        """Plain regression loss on every support and query point of the batch's tasks."""
        if not batch.batched:
            batch = Episode(*(t.unsqueeze(0) for t in batch.tensors()))
        self._check_ways(batch.support_y)
        x = torch.cat([batch.support_x, batch.query_x], dim=1).flatten(0, 1)
        y = torch.cat([batch.support_y, batch.query_y], dim=1).flatten(0, 1)
        out = self.backbone(x)
        loss = self.loss_fn(out, y)
        return loss, self.metrics(loss, out, y)
