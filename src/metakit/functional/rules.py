"""Inner-loop update rules as pure `init/update` pairs over parameter dicts (optax style).

A rule never mutates anything: `update(grads, state, params)` returns the additive updates and
the new state, so the same rule runs under `torch.func.grad` (second-order MAML keeps the graph
through it), under `vmap`, and in a plain loop. `sgd` with a dict of rates is Meta-SGD's rule;
`adam` is the inner optimizer of Reptile (Nichol et al. 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from metakit.errors import ConfigError

Params = dict[str, torch.Tensor]
RuleState = Any


class UpdateRule(NamedTuple):
    """`init(params) -> state`; `update(grads, state, params) -> (updates, state)`."""

    init: Callable[[Params], RuleState]
    update: Callable[[Params, RuleState, Params], tuple[Params, RuleState]]


def sgd(lr: float | Params) -> UpdateRule:
    """Plain gradient descent with one scalar rate, or one rate tensor per parameter."""
    if not isinstance(lr, dict) and lr <= 0:
        raise ConfigError(f"sgd learning rate must be positive, got {lr}")

    def init(params: Params) -> RuleState:
        return ()

    def update(grads: Params, state: RuleState, params: Params) -> tuple[Params, RuleState]:
        if isinstance(lr, dict):
            return {k: -lr[k] * g for k, g in grads.items()}, state
        return {k: -lr * g for k, g in grads.items()}, state

    return UpdateRule(init, update)


def adam(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> UpdateRule:
    """Adam (Kingma & Ba 2015) with bias correction, step for step equal to `torch.optim.Adam`."""
    if lr <= 0 or not (0 <= b1 < 1 and 0 <= b2 < 1) or eps <= 0:
        raise ConfigError(f"invalid adam settings lr={lr}, betas=({b1}, {b2}), eps={eps}")

    def init(params: Params) -> RuleState:
        zeros = {k: torch.zeros_like(p) for k, p in params.items()}
        return (0, zeros, dict(zeros))

    def update(grads: Params, state: RuleState, params: Params) -> tuple[Params, RuleState]:
        # torch.optim.Adam's formula, in as few ops as it takes: Reptile's test-time adaptation
        # runs 50 steps over every parameter tensor per episode, where op count is the cost
        t, m, v = state
        t += 1
        step, root_c2 = lr / (1 - b1**t), math.sqrt(1 - b2**t)
        m = {k: g if b1 == 0 else torch.lerp(m[k], g, 1 - b1) for k, g in grads.items()}
        v = {k: torch.addcmul(v[k] * b2, g, g, value=1 - b2) for k, g in grads.items()}
        updates = {k: m[k] / (v[k].sqrt() / root_c2 + eps) * -step for k in grads}
        return updates, (t, m, v)

    return UpdateRule(init, update)


def as_rule(rule: UpdateRule | float | Params) -> UpdateRule:
    """A rule as given, or SGD with the given scalar or per-parameter rates."""
    return rule if isinstance(rule, UpdateRule) else sgd(rule)


def make_rule(name: str, lr: float, beta1: float = 0.9) -> UpdateRule:
    """An update rule by name, for configs (`inner_optimizer: sgd|adam`)."""
    if name == "sgd":
        return sgd(lr)
    if name == "adam":
        return adam(lr, b1=beta1)
    raise ConfigError(f"unknown inner optimizer {name!r}; available: sgd, adam")
