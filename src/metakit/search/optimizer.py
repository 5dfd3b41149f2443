"""Neural optimizer search (Bello et al. 2017): a grammar expression as an update rule, and the
short training of a child network that rewards it.

The compiled rule keeps Adam's running averages (m of g, v of g², gamma of g³, with bias
correction) and steps `-lr * expression(operands)`. The child is a small MLP on a Fashion-MNIST
subset, trained once per learning rate of a grid, all rates at once as one batched network (the
copies share initial weights and minibatches, so only the rate differs); the reward is the best
validation accuracy over the grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metakit.functional.rules import Params, RuleState, UpdateRule
from metakit.search.child import ImageData
from metakit.search.grammar import Expression

B1, B2, B3, EPS = 0.9, 0.999, 0.999, 1e-8


def operands(
    g: torch.Tensor, w: torch.Tensor, m: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor, t: int
) -> dict[str, torch.Tensor]:
    """The grammar's operands for one tensor after `t` steps (m, v, gamma already updated)."""
    m_hat, v_hat, gamma_hat = m / (1 - B1**t), v / (1 - B2**t), gamma / (1 - B3**t)
    denom = v_hat.sqrt() + EPS
    return {
        "g": g, "g2": g * g, "g3": g * g * g, "m": m_hat, "v": v_hat, "gamma": gamma_hat,
        "sign_g": torch.sign(g), "sign_m": torch.sign(m_hat), "one": torch.ones_like(g),
        "two": torch.full_like(g, 2.0), "eps": torch.randn_like(g) * 0.1,
        "w4": 1e-4 * w, "w3": 1e-3 * w, "w2": 1e-2 * w, "w1": 1e-1 * w,
        "adam": m_hat / denom, "rmsprop": g / denom,
    }  # fmt: skip


def expression_rule(expression: Expression, lr: float | Params) -> UpdateRule:
    """`Δw = -lr * expression(operands)`; `lr` a scalar or one rate tensor per parameter."""

    def init(params: Params) -> RuleState:
        zeros = {k: torch.zeros_like(p) for k, p in params.items()}
        return (0, zeros, dict(zeros), dict(zeros))

    def update(grads: Params, state: RuleState, params: Params) -> tuple[Params, RuleState]:
        t, m, v, gamma = state
        t += 1
        m = {k: torch.lerp(m[k], g, 1 - B1) for k, g in grads.items()}
        v = {k: torch.lerp(v[k], g * g, 1 - B2) for k, g in grads.items()}
        gamma = {k: torch.lerp(gamma[k], g * g * g, 1 - B3) for k, g in grads.items()}
        out = {}
        for k, g in grads.items():
            direction = expression(operands(g, params[k], m[k], v[k], gamma[k], t))
            rate = lr[k] if isinstance(lr, dict) else lr
            out[k] = -rate * direction.expand_as(g)
        return out, (t, m, v, gamma)

    return UpdateRule(init, update)


# Bello et al.'s discovered families as token names of the depth-3 optimizer grammar (`Grammar.
# tokens`: (op1, op2, u1, u2, b), then (u1 of the previous value, op2, u2, b) per later group), to
# score them with a search's own reward
SIGN_RULES: dict[str, list[tuple[str, ...]]] = {
    "powersign": [  # e^{sign(g)·sign(m̂)}·g
        ("sign_g", "sign_m", "x", "x", "mul"), ("exp", "g", "x", "mul"), ("x", "g", "x", "keep"),
    ],
    "addsign": [  # (1 + sign(g)·sign(m̂))·g
        ("sign_g", "sign_m", "x", "x", "mul"), ("x", "one", "x", "add"), ("x", "g", "x", "mul"),
    ],
}  # fmt: skip


def probes(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Operand values at a few gradient scales, for `Expression.check`."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for scale in (1e-3, 1.0, 10.0):
        g = torch.randn(64, generator=gen) * scale
        w = torch.randn(64, generator=gen)
        m, v = g * 0.5, g * g * 0.5
        out.append(operands(g, w, m, v, g**3 * 0.5, 3))
    return out


@dataclass
class ChildTask:
    """A Fashion-MNIST subset for the children (flattened images)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (channels, height, width) of a row

    @classmethod
    def from_data(cls, data: ImageData, train: int, val: int) -> ChildTask:
        return cls(
            data.train_x[:train].flatten(1),
            data.train_y[:train],
            data.val_x[:val].flatten(1),
            data.val_y[:val],
            data.num_classes,
            tuple(data.train_x.shape[1:]),
        )


def mlp_params(copies: int, inputs: int, hidden: int, classes: int, seed: int) -> Params:
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(inputs, hidden, generator=gen) * math.sqrt(2 / inputs)
    w2 = torch.randn(hidden, classes, generator=gen) * math.sqrt(1 / hidden)
    one = {"w1": w1, "b1": torch.zeros(hidden), "w2": w2, "b2": torch.zeros(classes)}
    return {k: p.expand(copies, *p.shape).clone() for k, p in one.items()}


def mlp_logits(params: Params, x: torch.Tensor) -> torch.Tensor:
    """Logits `[copies, B, classes]` of the batched one-hidden-layer ReLU MLP."""
    h = torch.relu(torch.einsum("bi,lih->lbh", x, params["w1"]) + params["b1"][:, None])
    return torch.einsum("lbh,lhc->lbc", h, params["w2"]) + params["b2"][:, None]


def train_with_rule(
    make_rule: Callable[[Params], UpdateRule],
    task: ChildTask,
    lrs: Sequence[float],
    steps: int = 300,
    batch_size: int = 128,
    hidden: int = 32,
    seed: int = 0,
) -> list[float]:
    """Validation accuracy of the child after `steps` steps at each learning rate (0 for a copy
    whose weights diverged). `make_rule(lr_dict)` builds the rule with per-copy rates."""
    torch.manual_seed(seed)  # the rule's own randomness (drop, eps) is part of the design
    n = len(lrs)
    params = mlp_params(n, task.train_x.shape[1], hidden, task.num_classes, seed)
    rates = torch.tensor(list(lrs), dtype=torch.float32)
    rule = make_rule({k: rates.view(n, *[1] * (p.dim() - 1)) for k, p in params.items()})
    state = rule.init(params)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        idx = torch.randint(len(task.train_x), (batch_size,), generator=gen)
        params = {k: p.requires_grad_() for k, p in params.items()}
        logits = mlp_logits(params, task.train_x[idx])
        loss = F.cross_entropy(logits.flatten(0, 1), task.train_y[idx].repeat(n), reduction="sum")
        grads = torch.autograd.grad(loss / batch_size, list(params.values()))
        with torch.no_grad():
            grads = {k: torch.nan_to_num(g) for k, g in zip(params, grads, strict=True)}
            updates, state = rule.update(grads, state, {k: p.detach() for k, p in params.items()})
            params = {k: (p.detach() + updates[k]) for k, p in params.items()}
    with torch.no_grad():
        finite = torch.stack([torch.isfinite(p).flatten(1).all(1) for p in params.values()]).all(0)
        pred = mlp_logits({k: torch.nan_to_num(p) for k, p in params.items()}, task.val_x)
        acc = (pred.argmax(-1) == task.val_y).float().mean(1)
    return torch.where(finite, acc, torch.zeros_like(acc)).tolist()


def optimizer_reward(
    expression: Expression, task: ChildTask, lrs: Sequence[float], steps: int, seed: int
) -> tuple[float, float]:
    """Best validation accuracy over the rate grid, and the rate that gave it."""
    accs = train_with_rule(
        lambda rates: expression_rule(expression, rates), task, lrs, steps=steps, seed=seed
    )
    best = max(range(len(lrs)), key=lambda i: accs[i])
    return accs[best], lrs[best]
