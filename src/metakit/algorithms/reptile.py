"""Reptile (Nichol et al. 2018): move the initialisation towards task-adapted weights.

For each task, `inner_steps` steps of the inner optimizer (Adam with beta1 = 0 as in the paper,
or SGD) on the support set give φ_i; the outer update is `θ ← θ + ε·mean_i(φ_i − θ)`.
`meta_loss` hands the trainer a surrogate whose gradient is `θ − mean_i φ_i`, so the trainer's
plain SGD step (momentum 0, lr ε) is exactly that update. With `train.meta_batch: 1` the updates
are serial, with more they are batched. The reported loss and accuracy are on the query set
after adaptation: a held-out view of how well the inner loop fits each task.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.func import vmap

from metakit.algorithms.maml import MAML, Task
from metakit.data.episode import Episode
from metakit.errors import ConfigError
from metakit.functional.adapt import Params, adapt, query_forward
from metakit.functional.rules import UpdateRule, make_rule
from metakit.models.backbone import Backbone
from metakit.models.norm import BNMode


class Reptile(MAML):
    """First-order by construction: no `first_order` option, no graph through the inner loop."""

    name = "reptile"

    def __init__(
        self,
        backbone: Backbone,
        ways: int = 5,
        inner_lr: float = 1e-3,
        inner_steps: int = 5,
        test_inner_steps: int = 50,
        test_inner_lr: float | None = None,
        inner_optimizer: Literal["adam", "sgd"] = "adam",
        inner_beta1: float = 0.0,
        bn: BNMode = "transductive",
        task: Task = "classification",
        vectorize: Literal["auto", "vmap", "loop"] = "auto",
    ) -> None:
        super().__init__(
            backbone,
            ways=ways,
            inner_lr=inner_lr,
            inner_steps=inner_steps,
            test_inner_steps=test_inner_steps,
            test_inner_lr=test_inner_lr,
            first_order=True,
            bn=bn,
            task=task,
            vectorize=vectorize,
        )
        if inner_optimizer not in ("adam", "sgd"):
            raise ConfigError(
                f"reptile inner_optimizer must be adam or sgd, got {inner_optimizer!r}"
            )
        self.inner_optimizer, self.inner_beta1 = inner_optimizer, inner_beta1
        self.inner_rule()  # invalid settings fail at construction

    def inner_rule(self, test: bool = False) -> UpdateRule:
        lr = self.test_inner_lr if test else self.inner_lr
        return make_rule(self.inner_optimizer, lr, beta1=self.inner_beta1)

    def meta_loss(self, batch: Episode) -> tuple[torch.Tensor, dict[str, float]]:
        if not batch.batched:
            batch = Episode(*(t.unsqueeze(0) for t in batch.tensors()))
        self._check_ways(batch.support_y)
        params = dict(self.backbone.named_parameters())
        theta = {k: v.detach() for k, v in params.items()}
        phis, out = self.adapt_tasks(theta, batch)
        with torch.no_grad():
            query_loss = self.loss_fn(out.flatten(0, 1), batch.query_y.flatten(0, 1))
        # d(surrogate)/dθ = θ − mean_i φ_i, so an SGD step of size ε is the Reptile update
        surrogate = sum((params[k] * (theta[k] - phis[k].mean(0))).sum() for k in params)
        loss = surrogate - surrogate.detach() + query_loss
        return loss, self.metrics(query_loss, out, batch.query_y)

    def adapt_tasks(self, theta: Params, batch: Episode) -> tuple[Params, torch.Tensor]:
        """Adapted weights φ_i stacked over tasks `[T, ...]`, and query outputs `[T, Q, C]`."""
        buffers = dict(self.backbone.named_buffers())

        def one(sx, sy, qx):  # type: ignore[no-untyped-def]
            phi = adapt(
                self.backbone,
                theta,
                buffers,
                sx,
                sy,
                self.loss_fn,
                self.inner_steps,
                self.inner_rule(),
                first_order=True,
            )
            phi = {k: v.detach() for k, v in phi.items()}
            return phi, query_forward(self.backbone, phi, buffers, sx, qx, self.transductive)

        inputs = (batch.support_x, batch.support_y, batch.query_x)
        if self._use_vmap(batch.support_x.device):
            phis, out = vmap(one, randomness="different")(*inputs)
            return phis, out.detach()
        results = [one(*task) for task in zip(*inputs, strict=True)]
        phis = {k: torch.stack([r[0][k] for r in results]) for k in theta}
        return phis, torch.stack([r[1] for r in results]).detach()
