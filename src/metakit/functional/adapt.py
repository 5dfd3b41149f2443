"""The inner loop of gradient-based meta-learning as pure functions over parameter dicts.

`adapt` takes K gradient steps on a support set with `torch.func.functional_call` and
`torch.func.grad`. The graph is kept for second-order MAML; `first_order=True` detaches the
inner gradients (FOMAML). The update rule is an `UpdateRule` (`metakit.functional.rules`), or a
scalar rate / dict of per-parameter rates meaning SGD (Meta-SGD). A meta-batch runs either under
`torch.func.vmap` or in a plain loop; both compute the same function, and tests hold them equal.
`transductive=False` scores queries with BatchNorm statistics of the support set only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from metakit.functional.rules import RuleState, UpdateRule, as_rule
from metakit.models.norm import statistics_from_first

Params = dict[str, torch.Tensor]
Rule = UpdateRule | float | Params
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
    rule: Rule,
    first_order: bool = False,
) -> Params:
    """`steps` steps of `rule` from `params` on `(x, y)` (a number or dict of rates means SGD)."""
    return adapt_batches(model, params, buffers, [(x, y)] * steps, loss_fn, rule, first_order)[0]


def adapt_batches(
    model: nn.Module,
    params: Params,
    buffers: Params,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    rule: Rule,
    first_order: bool = False,
    state: RuleState | None = None,
) -> tuple[Params, RuleState]:
    """One step of `rule` per `(x, y)` batch, the rule's state carried from step to step
    (Reptile's inner mini-batches; `adapt` is the full-batch case). Starts from `state` (e.g.
    Adam moments kept from earlier tasks) or the rule's fresh state; returns the final
    parameters and state."""
    rule = as_rule(rule)
    state = rule.init(params) if state is None else state
    for x, y in batches:

        def batch_loss(p: Params, x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
            return loss_fn(functional_call(model, (p, buffers), (x,)), y)

        if first_order:  # gradients at the current values, with no graph back to `params`
            grads, loss = grad_and_value(batch_loss)({k: p.detach() for k, p in params.items()})
        else:
            grads, loss = grad_and_value(batch_loss)(params)
        if rule.uses_loss:
            updates, state = rule.update(grads, state, params, loss.detach())
        else:
            updates, state = rule.update(grads, state, params)
        params = {k: p + updates[k] for k, p in params.items()}
    return params, state


def query_forward(
    model: nn.Module,
    params: Params,
    buffers: Params,
    support_x: torch.Tensor,
    query_x: torch.Tensor,
    transductive: bool = True,
) -> torch.Tensor:
    """Outputs for the queries; non-transductive BatchNorm takes statistics from the support."""
    if transductive:
        return functional_call(model, (params, buffers), (query_x,))
    rows = support_x.shape[0]
    with statistics_from_first(rows):
        out = functional_call(model, (params, buffers), (torch.cat([support_x, query_x]),))
    return out[rows:]


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
    rule: Rule,
    first_order: bool,
    transductive: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapt on the support set, then return the query loss and query outputs of one task."""
    adapted = adapt(model, params, buffers, support_x, support_y, loss_fn, steps, rule, first_order)
    out = query_forward(model, adapted, buffers, support_x, query_x, transductive)
    return loss_fn(out, query_y), out


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
    rule: Rule,
    first_order: bool = False,
    vectorize: bool = True,
    transductive: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task query losses `[T]` and logits `[T, Q, C]` for a meta-batch (leading dim T).

    `vectorize=True` maps the task function with `vmap`; `False` runs the same function in a
    Python loop. Which is faster depends on the device (measure with the throughput benchmark).
    """

    def one(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor):
        return task_query_loss(
            model, params, buffers, sx, sy, qx, qy, loss_fn, steps, rule, first_order, transductive
        )

    if vectorize:
        return vmap(one, randomness="different")(support_x, support_y, query_x, query_y)
    outs = [one(*task) for task in zip(support_x, support_y, query_x, query_y, strict=True)]
    losses, logits = zip(*outs, strict=True)
    return torch.stack(losses), torch.stack(logits)
