"""The inner loop of gradient-based meta-learning as pure functions over parameter dicts.

`adapt` takes K gradient steps on a support set with `torch.func.functional_call` and
`torch.func.grad`. The graph is kept for second-order MAML; `first_order=True` detaches the
inner gradients (FOMAML). The update rule is SGD with either a scalar rate or a dict of
per-parameter rates (Meta-SGD). A meta-batch runs either under `torch.func.vmap` or in a plain
loop; both compute the same function, and tests hold them equal.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def split_state(module: nn.Module) -> tuple[Params, Params]:
    """The module's parameters and buffers as two dicts (the parameters keep requires_grad)."""
    return dict(module.named_parameters()), dict(module.named_buffers())


def adapt(
    model: nn.Module,
    params: Params,
    buffers: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    steps: int,
    lr: float | Params,
    first_order: bool = False,
) -> Params:
    """`steps` SGD steps from `params` on `(x, y)`; `lr` is a scalar or a rate per parameter."""

    def support_loss(p: Params) -> torch.Tensor:
        return loss_fn(functional_call(model, (p, buffers), (x,)), y)

    for _ in range(steps):
        grads = grad(support_loss)(params)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        params = {
            k: p - (lr[k] if isinstance(lr, dict) else lr) * grads[k] for k, p in params.items()
        }
    return params


def task_query_loss(
    model: nn.Module,
    params: Params,
    buffers: Params,
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    loss_fn: LossFn,
    steps: int,
    lr: float | Params,
    first_order: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapt on the support set, then return the query loss and query logits of one task."""
    adapted = adapt(model, params, buffers, support_x, support_y, loss_fn, steps, lr, first_order)
    logits = functional_call(model, (adapted, buffers), (query_x,))
    return loss_fn(logits, query_y), logits


def batched_adapt_loss(
    model: nn.Module,
    params: Params,
    buffers: Params,
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    loss_fn: LossFn,
    steps: int,
    lr: float | Params,
    first_order: bool = False,
    vectorize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task query losses `[T]` and logits `[T, Q, C]` for a meta-batch (leading dim T).

    `vectorize=True` maps the task function with `vmap`; `False` runs the same function in a
    Python loop. Which is faster depends on the device (measure with the throughput benchmark).
    """

    def one(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor):
        return task_query_loss(
            model, params, buffers, sx, sy, qx, qy, loss_fn, steps, lr, first_order
        )

    if vectorize:
        return vmap(one, randomness="different")(support_x, support_y, query_x, query_y)
    outs = [one(*task) for task in zip(support_x, support_y, query_x, query_y, strict=True)]
    losses, logits = zip(*outs, strict=True)
    return torch.stack(losses), torch.stack(logits)
