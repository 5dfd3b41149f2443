"""MAML (Finn et al. 2017), first-order MAML as a flag, and Meta-SGD (Li et al. 2017).

The inner loop is `metakit.functional.adapt`. A meta-batch runs either as a Python loop with
ordinary autograd, or vectorised as `vmap(grad(task_loss))`: the task dimension stays
outermost because an outer backward *through* vmap gets BatchNorm's second-order terms wrong
(measured: 6e-3 off against finite differences; functorch issue #534). Both paths hand
their meta-gradient to the trainer through a surrogate loss whose value is the query loss and
whose gradient is the mean per-task meta-gradient, so every algorithm keeps
`meta_loss → backward`; the loop path runs each task's backward at once, so only one task's
graph is alive at a time (measured: peak memory 2.4 GB → see benchmarks/maml_throughput.py).

BatchNorm uses batch statistics, never running averages; `bn` says which batch (see
`metakit.models.norm`): "transductive" (the MAML paper's numbers) or "support" (per-task
statistics of the support set only). The same class does classification (cross-entropy, one
output per way) and regression (`task: regression`, MSE, one output).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from metakit.algorithms.base import Algorithm
from metakit.data.episode import Episode
from metakit.errors import ConfigError
from metakit.functional.adapt import (
    LossFn,
    Params,
    adapt_batches,
    query_forward,
    task_query_loss,
)
from metakit.functional.rules import RuleState, UpdateRule, sgd
from metakit.models.backbone import Backbone
from metakit.models.norm import BN_MODES, BNMode, use_batch_statistics

Task = Literal["classification", "regression"]


class Adapted(NamedTuple):
    """Task state after test-time adaptation: adapted parameters, the support set (for
    non-transductive BatchNorm) and the task's ways (0 for regression)."""

    params: Params
    support_x: torch.Tensor
    ways: int


class MAML(Algorithm):
    """Learn an initialisation from which `inner_steps` SGD steps fit a new task.

    `first_order` drops second-order terms (FOMAML). Test-time adaptation uses
    `test_inner_steps` and `test_inner_lr` (default: the training rate). `vectorize` picks vmap,
    a loop, or `auto` (a loop for conv nets on CPU, where batched convolutions are slow; vmap
    elsewhere).
    """

    name = "maml"
    needs_grad_to_adapt = True
    tasks = ("classification", "regression")

    def __init__(
        self,
        backbone: Backbone,
        ways: int = 5,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        test_inner_steps: int = 3,
        test_inner_lr: float | None = None,
        first_order: bool = False,
        bn: BNMode = "transductive",
        task: Task = "classification",
        vectorize: Literal["auto", "vmap", "loop"] = "auto",
    ) -> None:
        super().__init__(backbone)
        for label, value in (("inner_lr", inner_lr), ("test_inner_lr", test_inner_lr)):
            if value is not None and value <= 0:
                raise ConfigError(f"{self.name} {label} must be positive, got {value}")
        if inner_steps < 1 or test_inner_steps < 1:
            raise ConfigError(
                f"{self.name} needs at least one inner step (got inner_steps={inner_steps}, "
                f"test_inner_steps={test_inner_steps}); with zero it learns nothing per task"
            )
        if task not in ("classification", "regression"):
            raise ConfigError(f"task must be 'classification' or 'regression', got {task!r}")
        if task == "classification" and ways < 2:
            raise ConfigError(f"{self.name} ways must be >= 2, got {ways}")
        if bn not in BN_MODES:
            raise ConfigError(f"unknown BatchNorm mode {bn!r}; available: {', '.join(BN_MODES)}")
        if vectorize not in ("auto", "vmap", "loop"):
            raise ConfigError(f"vectorize must be auto, vmap or loop, got {vectorize!r}")
        self.task = task
        self.ways = ways if task == "classification" else 1
        self.inner_lr, self.inner_steps = inner_lr, inner_steps
        self.test_inner_steps = test_inner_steps
        self.test_inner_lr = inner_lr if test_inner_lr is None else test_inner_lr
        self.first_order, self.bn, self.vectorize = first_order, bn, vectorize
        backbone.head = nn.Linear(backbone.out_dim, self.ways)
        use_batch_statistics(backbone, bn)

    # -- pieces a subclass may change -------------------------------------------------------
    def inner_rule(self, test: bool = False) -> UpdateRule:
        """The inner-loop update rule (SGD at `inner_lr`, or `test_inner_lr` when testing)."""
        return sgd(self.test_inner_lr if test else self.inner_lr)

    def inner_start_state(self) -> RuleState | None:
        """State the inner rule starts from at test time (None: the rule's fresh state)."""
        return None

    def meta_parameters(self) -> tuple[Params, Params]:
        """(network parameters, extra meta-parameters such as Meta-SGD rates)."""
        return dict(self.backbone.named_parameters()), {}

    @property
    def loss_fn(self) -> LossFn:
        return F.mse_loss if self.task == "regression" else F.cross_entropy

    @property
    def transductive(self) -> bool:
        return self.bn == "transductive"

    # -- the common interface ---------------------------------------------------------------
    def adapt(
        self, support_x: torch.Tensor, support_y: torch.Tensor, steps: int | None = None
    ) -> Adapted:
        """Fine-tune on the support set as at test time (`steps` defaults to test_inner_steps)."""
        ways = self._check_ways(support_y, exact=False)
        params, _ = self.meta_parameters()
        buffers = dict(self.backbone.named_buffers())
        steps = self.test_inner_steps if steps is None else steps
        with torch.enable_grad():
            start = {k: v.detach().requires_grad_() for k, v in params.items()}
            out, _ = adapt_batches(
                self.backbone,
                start,
                buffers,
                [(support_x, support_y)] * steps,
                self.loss_fn,
                self.inner_rule(test=True),
                first_order=True,
                state=self.inner_start_state(),
            )
        return Adapted({k: v.detach() for k, v in out.items()}, support_x, ways)

    def logits(self, state: Adapted, query_x: torch.Tensor) -> torch.Tensor:
        buffers = dict(self.backbone.named_buffers())
        out = query_forward(
            self.backbone, state.params, buffers, state.support_x, query_x, self.transductive
        )
        if self.task == "regression":
            return out
        return out[:, : state.ways]  # a task with fewer ways uses the first output units

    def meta_loss(self, batch: Episode) -> tuple[torch.Tensor, dict[str, float]]:
        if not batch.batched:
            batch = Episode(*(t.unsqueeze(0) for t in batch.tensors()))
        self._check_ways(batch.support_y)
        run = self._vmapped if self._use_vmap(batch.support_x.device) else self._looped
        loss, out = run(batch)
        return loss, self.metrics(loss, out, batch.query_y)

    def metrics(self, loss: torch.Tensor, out: torch.Tensor, target: torch.Tensor) -> dict:
        if self.task == "regression":
            return {"loss": loss.item(), "mse": F.mse_loss(out, target).item()}
        acc = (out.argmax(-1) == target).float().mean()
        return {"loss": loss.item(), "accuracy": acc.item()}

    # -- internals --------------------------------------------------------------------------
    def _use_vmap(self, device: torch.device) -> bool:
        if self.vectorize == "auto":  # measured (benchmarks/maml_throughput.py, sinusoid MLP):
            # per-task convolutions under vmap are slow on CPU, batched matmuls are fast
            convs = any(isinstance(m, nn.modules.conv._ConvNd) for m in self.backbone.modules())
            return device.type != "cpu" or not convs
        return self.vectorize == "vmap"

    def _looped(self, batch: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """One task at a time, each task's graph freed after its backward (low peak memory)."""
        params, extra = self.meta_parameters()
        buffers = dict(self.backbone.named_buffers())
        names = [*params, *(f"extra.{k}" for k in extra)]
        tensors = [*params.values(), *extra.values()]
        totals: list[torch.Tensor] = [torch.zeros_like(t) for t in tensors]
        losses, outs = [], []
        for sx, sy, qx, qy in zip(*batch.tensors(), strict=True):
            loss, out = task_query_loss(
                self.backbone,
                params,
                buffers,
                sx,
                sy,
                qx,
                qy,
                self.loss_fn,
                self.inner_steps,
                self.rule_from(extra),
                self.first_order,
                self.transductive,
            )
            grads = torch.autograd.grad(loss, tensors, allow_unused=True)
            for total, g in zip(totals, grads, strict=True):
                if g is not None:
                    total += g
            losses.append(loss.detach())
            outs.append(out.detach())
        tasks = len(losses)
        mean = dict(zip(names, (t / tasks for t in totals), strict=True))
        g_params = {k: mean[k] for k in params}
        g_extra = {k: mean[f"extra.{k}"] for k in extra}
        return self._surrogate(params, extra, g_params, g_extra, torch.stack(losses)), torch.stack(
            outs
        )

    def _vmapped(self, batch: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """All tasks at once: `vmap(grad(task))`, the task dimension outermost."""
        params, extra = self.meta_parameters()
        buffers = dict(self.backbone.named_buffers())

        def task(p: Params, e: Params, sx, sy, qx, qy):  # type: ignore[no-untyped-def]
            loss, out = task_query_loss(
                self.backbone,
                p,
                buffers,
                sx,
                sy,
                qx,
                qy,
                self.loss_fn,
                self.inner_steps,
                self.rule_from(e),
                self.first_order,
                self.transductive,
            )
            return loss, (loss, out)

        detached = (
            {k: v.detach() for k, v in params.items()},
            {k: v.detach() for k, v in extra.items()},
        )
        (g_params, g_extra), (losses, out) = vmap(
            grad(task, argnums=(0, 1), has_aux=True), in_dims=(None, None, 0, 0, 0, 0)
        )(*detached, *batch.tensors())
        g_params = {k: g.mean(0) for k, g in g_params.items()}
        g_extra = {k: g.mean(0) for k, g in g_extra.items()}
        return self._surrogate(params, extra, g_params, g_extra, losses), out

    @staticmethod
    def _surrogate(
        params: Params, extra: Params, g_params: Params, g_extra: Params, losses: torch.Tensor
    ) -> torch.Tensor:
        """Value: the mean query loss; gradient: the given mean per-task meta-gradient."""
        surrogate = sum((params[k] * g).sum() for k, g in g_params.items())
        surrogate = surrogate + sum((extra[k] * g).sum() for k, g in g_extra.items())
        return surrogate - surrogate.detach() + losses.mean().detach()

    def rule_from(self, extra: Params) -> UpdateRule:
        """The training rule built from (possibly vmapped) extra meta-parameters."""
        return self.inner_rule()

    def _check_ways(self, labels: torch.Tensor, exact: bool = True) -> int:
        if self.task == "regression":
            if labels.dim() < 1 or labels.shape[-1] != 1 or labels.is_floating_point() is False:
                raise ConfigError(
                    f"{self.name} regression expects float targets of shape [K, 1], got "
                    f"{tuple(labels.shape)} {labels.dtype}"
                )
            return 0
        ways = int(labels.max()) + 1
        if ways > self.ways or (exact and ways != self.ways):
            raise ConfigError(
                f"{self.name} was built for {self.ways}-way tasks but got a {ways}-way episode; "
                f"set algorithm.ways={ways} (its output layer has one unit per way)"
            )
        return ways


class MetaSGD(MAML):
    """Meta-SGD: a learnable inner learning rate for every parameter entry, meta-learned too.

    The rates start at `inner_lr` and are learned directly (they may change sign, as in Li et
    al. 2017); at test time they are scaled by `test_inner_lr / inner_lr`.
    """

    name = "metasgd"

    def __init__(self, backbone: Backbone, **options: object) -> None:
        super().__init__(backbone, **options)  # type: ignore[arg-type]
        self.rates = nn.ParameterList(
            nn.Parameter(torch.full_like(p, float(self.inner_lr)))
            for p in self.backbone.parameters()
        )

    def meta_parameters(self) -> tuple[Params, Params]:
        names = [k for k, _ in self.backbone.named_parameters()]
        return dict(self.backbone.named_parameters()), dict(zip(names, self.rates, strict=True))

    def inner_rule(self, test: bool = False) -> UpdateRule:
        rates = self.meta_parameters()[1]
        if test:
            scale = self.test_inner_lr / self.inner_lr
            rates = {k: v.detach() * scale for k, v in rates.items()}
        return sgd(rates)

    def rule_from(self, extra: Params) -> UpdateRule:
        return sgd(extra)
