"""Reptile (Nichol et al. 2018): move the initialisation towards task-adapted weights.

For each task, `inner_steps` steps of the inner optimizer (Adam with beta1 = 0 as in the paper,
or SGD) on the support set give φ_i; with `inner_batch` each training step takes the next
mini-batch of a shuffled support set, as in the paper (5 steps of 10 on 10-shot 5-way tasks:
one pass, and steps on different examples are what makes Reptile's update favour within-task
generalisation rather than only a low joint loss); the outer update is `θ ← θ + ε·mean_i(φ_i − θ)`.
`meta_loss` hands the trainer a surrogate whose gradient is `θ − mean_i φ_i`, so the trainer's
plain SGD step (momentum 0, lr ε) is exactly that update. With `train.meta_batch: 1` the updates
are serial, with more they are batched. `carry_inner_state` keeps the inner optimizer's state
(Adam's moments and step count) from task to task and into test-time adaptation, as the
paper's code does (it resets only the weights between tasks): per-parameter step sizes then
follow the gradient scales seen in meta-training instead of restarting sign-like at every task.
Tasks of one meta-batch all start from the same state and the state moves to their mean, so
the loop and vmap paths stay equal; the state is a buffer, so it is checkpointed. The reported
loss and accuracy are on the query set after adaptation: a held-out view of how well the inner
loop fits each task.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.func import vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from metakit.algorithms.maml import MAML, Task
from metakit.data.episode import Episode
from metakit.errors import ConfigError
from metakit.functional.adapt import Params, adapt_batches, query_forward
from metakit.functional.rules import RuleState, UpdateRule, make_rule
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
        inner_batch: int | None = None,
        carry_inner_state: bool = False,
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
        if inner_batch is not None and inner_batch < 1:
            raise ConfigError(f"reptile inner_batch must be >= 1 (or null), got {inner_batch}")
        self.inner_optimizer, self.inner_beta1 = inner_optimizer, inner_beta1
        self.inner_batch, self.carry_inner_state = inner_batch, carry_inner_state
        rule = self.inner_rule()  # invalid settings fail at construction
        if carry_inner_state:
            params = {k: p.detach() for k, p in self.backbone.named_parameters()}
            leaves, self._state_spec = tree_flatten(rule.init(params))
            self._state_ints = [isinstance(leaf, int) for leaf in leaves]
            for i, leaf in enumerate(leaves):
                self.register_buffer(f"inner_state_{i}", torch.as_tensor(leaf).clone())

    def inner_start_state(self) -> RuleState | None:
        if not self.carry_inner_state:
            return None
        leaves = [getattr(self, f"inner_state_{i}") for i in range(len(self._state_ints))]
        leaves = [
            int(t.item()) if is_int else t
            for t, is_int in zip(leaves, self._state_ints, strict=True)
        ]
        return tree_unflatten(leaves, self._state_spec)

    @torch.no_grad()
    def _store_state(self, leaves: list[torch.Tensor]) -> None:
        """Per-task final states `[T, ...]` → their mean (ints such as step counts: the max)."""
        for i, (leaf, is_int) in enumerate(zip(leaves, self._state_ints, strict=True)):
            getattr(self, f"inner_state_{i}").copy_(leaf.max() if is_int else leaf.mean(0))

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
        xs, ys = self.inner_batches(batch.support_x, batch.support_y)
        start = self.inner_start_state()

        def one(xs, ys, sx, qx):  # type: ignore[no-untyped-def]
            phi, state = adapt_batches(
                self.backbone,
                theta,
                buffers,
                zip(xs, ys, strict=True),
                self.loss_fn,
                self.inner_rule(),
                first_order=True,
                state=start,
            )
            phi = {k: v.detach() for k, v in phi.items()}
            leaves = [torch.as_tensor(leaf).detach() for leaf in tree_flatten(state)[0]]
            out = query_forward(self.backbone, phi, buffers, sx, qx, self.transductive)
            return phi, leaves, out

        inputs = (xs, ys, batch.support_x, batch.query_x)
        if self._use_vmap(batch.support_x.device):
            phis, leaves, out = vmap(one, randomness="different")(*inputs)
        else:
            results = [one(*task) for task in zip(*inputs, strict=True)]
            phis = {k: torch.stack([r[0][k] for r in results]) for k in theta}
            leaves = [torch.stack(group) for group in zip(*(r[1] for r in results), strict=True)]
            out = torch.stack([r[2] for r in results])
        if self.carry_inner_state:
            self._store_state(leaves)
        return phis, out.detach()

    def inner_batches(
        self, support_x: torch.Tensor, support_y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step training batches `[T, steps, B, ...]`: the whole support set each step, or
        consecutive `inner_batch`-sized slices of per-task shuffles (reshuffled when used up)."""
        tasks, n = support_y.shape[:2]
        steps, size = self.inner_steps, self.inner_batch
        if size is None or size >= n:
            index = torch.arange(n).expand(tasks, steps, n)
        else:
            rounds = -(-steps * size // n)
            perms = [torch.cat([torch.randperm(n) for _ in range(rounds)]) for _ in range(tasks)]
            index = torch.stack(perms)[:, : steps * size].view(tasks, steps, size)
        index = index.to(support_y.device)
        rows = torch.arange(tasks, device=support_y.device).view(tasks, 1, 1)
        return support_x[rows, index], support_y[rows, index]
