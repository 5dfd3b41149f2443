"""Update rules as pure `init/update` pairs over parameter dicts (optax style).

A rule never mutates anything: `update(grads, state, params)` returns the additive updates and
the new state, so the same rule runs under `torch.func.grad` (second-order MAML keeps the graph
through it), under `vmap`, and in a plain loop. `sgd` with a dict of rates is Meta-SGD's rule;
`adam` is the inner optimizer of Reptile (Nichol et al. 2018).

Rules compose: `chain(a, b, ...)` feeds each rule's output to the next, so the transforms
(`trace`, `scale_by_adam`, `scale_by_rms`, `sign`, `add_decayed_weights`) and a final
`scale(-lr)` spell out the classic optimizers; `momentum`, `rmsprop` and `adam` match
`torch.optim` step for step (tests hold them equal). `metakit.functional.optim.RuleOptimizer`
runs any rule as a `torch.optim.Optimizer`.
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
    """`init(params) -> state`; `update(grads, state, params) -> (updates, state)`. A rule with
    `uses_loss` (Meta-LSTM's gates read the loss) is called `update(grads, state, params, loss)`
    by the inner loop."""

    init: Callable[[Params], RuleState]
    update: Callable[..., tuple[Params, RuleState]]
    uses_loss: bool = False


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

    return UpdateRule(scale_by_adam(b1, b2, eps).init, update)


def scale(step: float) -> UpdateRule:
    """Multiply the incoming updates by `step` (`scale(-lr)` ends a descent chain)."""

    def update(grads: Params, state: RuleState, params: Params) -> tuple[Params, RuleState]:
        return {k: g * step for k, g in grads.items()}, state

    return UpdateRule(lambda params: (), update)


def sign() -> UpdateRule:
    """The sign of each coordinate (signSGD; a building block of PowerSign and AddSign)."""

    def update(grads: Params, state: RuleState, params: Params) -> tuple[Params, RuleState]:
        return {k: torch.sign(g) for k, g in grads.items()}, state

    return UpdateRule(lambda params: (), update)


def add_decayed_weights(weight_decay: float) -> UpdateRule:
    """`g + weight_decay * w`: torch.optim's coupled `weight_decay`, placed first in a chain."""
    if weight_decay < 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")

    def update(grads: Params, state: RuleState, params: Params) -> tuple[Params, RuleState]:
        return {k: g + weight_decay * params[k] for k, g in grads.items()}, state

    return UpdateRule(lambda params: (), update)


def trace(decay: float = 0.9, nesterov: bool = False) -> UpdateRule:
    """Momentum as torch.optim.SGD keeps it: `b = decay * b + g`, emitting `b`, or
    `g + decay * b` with Nesterov's look-ahead."""
    if not 0 <= decay < 1:
        raise ConfigError(f"momentum decay must lie in [0, 1), got {decay}")

    def init(params: Params) -> RuleState:
        return {k: torch.zeros_like(p) for k, p in params.items()}

    def update(grads: Params, state: RuleState, params: Params) -> tuple[Params, RuleState]:
        buf = {k: state[k] * decay + g for k, g in grads.items()}
        if nesterov:
            return {k: g + decay * buf[k] for k, g in grads.items()}, buf
        return buf, buf

    return UpdateRule(init, update)


def scale_by_rms(decay: float = 0.99, eps: float = 1e-8, centered: bool = False) -> UpdateRule:
    """RMSprop's scaling as torch.optim.RMSprop computes it: `g / (sqrt(v) + eps)` with
    `v = decay * v + (1 - decay) g^2` (`centered` subtracts the squared running mean)."""
    if not 0 <= decay < 1 or eps <= 0:
        raise ConfigError(f"invalid rms settings decay={decay}, eps={eps}")

    def init(params: Params) -> RuleState:
        zeros = {k: torch.zeros_like(p) for k, p in params.items()}
        return (zeros, dict(zeros))

    def update(grads: Params, state: RuleState, params: Params) -> tuple[Params, RuleState]:
        v, mean = state
        v = {k: torch.addcmul(v[k] * decay, g, g, value=1 - decay) for k, g in grads.items()}
        if centered:
            mean = {k: torch.lerp(mean[k], g, 1 - decay) for k, g in grads.items()}
            denom = {k: torch.addcmul(v[k], mean[k], mean[k], value=-1).sqrt() + eps for k in v}
        else:
            denom = {k: v[k].sqrt() + eps for k in v}
        return {k: g / denom[k] for k, g in grads.items()}, (v, mean)

    return UpdateRule(init, update)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> UpdateRule:
    """Adam's direction `m_hat / (sqrt(v_hat) + eps)` with bias correction (times -lr: Adam)."""
    if not (0 <= b1 < 1 and 0 <= b2 < 1) or eps <= 0:
        raise ConfigError(f"invalid adam settings betas=({b1}, {b2}), eps={eps}")

    def init(params: Params) -> RuleState:
        zeros = {k: torch.zeros_like(p) for k, p in params.items()}
        return (0, zeros, dict(zeros))

    def update(grads: Params, state: RuleState, params: Params) -> tuple[Params, RuleState]:
        t, m, v = state
        t += 1
        c1, root_c2 = 1 - b1**t, math.sqrt(1 - b2**t)
        m = {k: torch.lerp(m[k], g, 1 - b1) for k, g in grads.items()}
        v = {k: torch.addcmul(v[k] * b2, g, g, value=1 - b2) for k, g in grads.items()}
        return {k: (m[k] / c1) / (v[k].sqrt() / root_c2 + eps) for k in grads}, (t, m, v)

    return UpdateRule(init, update)


def chain(*rules: UpdateRule) -> UpdateRule:
    """Apply `rules` in order, each to the previous one's output; the state is their tuple."""
    if not rules:
        raise ConfigError("chain needs at least one rule")

    def init(params: Params) -> RuleState:
        return tuple(r.init(params) for r in rules)

    def update(grads: Params, state: RuleState, params: Params) -> tuple[Params, RuleState]:
        new = []
        for rule, s in zip(rules, state, strict=True):
            grads, s = rule.update(grads, s, params)
            new.append(s)
        return grads, tuple(new)

    return UpdateRule(init, update)


def momentum(lr: float, decay: float = 0.9, nesterov: bool = False) -> UpdateRule:
    """SGD with (Nesterov) momentum, as `torch.optim.SGD(momentum=decay, nesterov=...)`."""
    _check_lr(lr, "momentum")
    return chain(trace(decay, nesterov), scale(-lr))


def rmsprop(
    lr: float, decay: float = 0.99, eps: float = 1e-8, centered: bool = False
) -> UpdateRule:
    """RMSprop, as `torch.optim.RMSprop(alpha=decay, eps=eps, centered=centered)`."""
    _check_lr(lr, "rmsprop")
    return chain(scale_by_rms(decay, eps, centered), scale(-lr))


def _check_lr(lr: float, name: str) -> None:
    if lr <= 0:
        raise ConfigError(f"{name} learning rate must be positive, got {lr}")


def as_rule(rule: UpdateRule | float | Params) -> UpdateRule:
    """A rule as given, or SGD with the given scalar or per-parameter rates."""
    return rule if isinstance(rule, UpdateRule) else sgd(rule)


RULES: dict[str, Callable[..., UpdateRule]] = {
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": lambda lr: momentum(lr, nesterov=True),
    "rmsprop": rmsprop,
    "adam": adam,
}


def make_rule(name: str, lr: float, beta1: float = 0.9) -> UpdateRule:
    """An update rule by name, for configs (`inner_optimizer: sgd|momentum|nesterov|rmsprop|
    adam`; `beta1` is Adam's)."""
    if name not in RULES:
        raise ConfigError(f"unknown optimizer {name!r}; available: {', '.join(RULES)}")
    return adam(lr, b1=beta1) if name == "adam" else RULES[name](lr)


DECAYS = ("none", "linear", "cyclical", "restart")


def internal_decay(kind: str, steps: int, periods: int = 1) -> Callable[[int], float]:
    """Bello et al.'s internal decays f(t) of the sign term: none (1), linear (1 - t/T),
    cyclical (0.5 (1 + cos(2 pi n t / T))) and restart (cosine from 1 to 0, restarted n times)."""
    if kind not in DECAYS:
        raise ConfigError(f"decay must be one of {', '.join(DECAYS)}, got {kind!r}")
    if kind != "none" and steps < 1:
        raise ConfigError(f"decay {kind!r} needs decay_steps >= 1 (the run's number of steps)")
    if periods < 1:
        raise ConfigError(f"decay periods must be >= 1, got {periods}")
    if kind == "linear":
        return lambda t: max(0.0, 1 - t / steps)
    if kind == "cyclical":
        return lambda t: 0.5 * (1 + math.cos(2 * math.pi * periods * t / steps))
    if kind == "restart":
        period = steps / periods
        return lambda t: 0.5 * (1 + math.cos(math.pi * (t % period) / period))
    return lambda t: 1.0


def _sign_rule(
    lr: float, beta: float, decay: str, decay_steps: int, periods: int, scale_of: Callable
) -> UpdateRule:
    _check_lr(lr, "sign rule")
    if not 0 <= beta < 1:
        raise ConfigError(f"beta (the moving average of g) must lie in [0, 1), got {beta}")
    f = internal_decay(decay, decay_steps, periods)

    def init(params: Params) -> RuleState:
        return (0, {k: torch.zeros_like(p) for k, p in params.items()})

    def update(grads: Params, state: RuleState, params: Params) -> tuple[Params, RuleState]:
        t, m = state
        m = {k: torch.lerp(m[k], g, 1 - beta) for k, g in grads.items()}
        ft = f(t)
        out = {
            k: -lr * scale_of(ft * torch.sign(g) * torch.sign(m[k])) * g for k, g in grads.items()
        }
        return out, (t + 1, m)

    return UpdateRule(init, update)


def powersign(
    lr: float,
    beta: float = 0.9,
    alpha: float = math.e,
    decay: str = "none",
    decay_steps: int = 0,
    periods: int = 1,
) -> UpdateRule:
    """PowerSign (Bello et al. 2017): `-lr * alpha^(f(t) sign(g) sign(m)) * g`, `m` the moving
    average of g: a larger step where the gradient agrees with its history, a smaller one
    where it does not."""
    if alpha <= 0:
        raise ConfigError(f"powersign alpha must be positive, got {alpha}")
    log_alpha = math.log(alpha)
    return _sign_rule(lr, beta, decay, decay_steps, periods, lambda s: torch.exp(s * log_alpha))


def addsign(
    lr: float,
    beta: float = 0.9,
    alpha: float = 1.0,
    decay: str = "none",
    decay_steps: int = 0,
    periods: int = 1,
) -> UpdateRule:
    """AddSign (Bello et al. 2017): `-lr * (alpha + f(t) sign(g) sign(m)) * g`."""
    return _sign_rule(lr, beta, decay, decay_steps, periods, lambda s: alpha + s)


RULES["powersign"] = powersign
RULES["addsign"] = addsign
