"""Activation search (Ramachandran et al. 2017): a grammar expression as an activation function,
rewarded by the short training of a small child network that uses it in every hidden layer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metakit.models.activations import ExpressionActivation, make_activation
from metakit.search.grammar import Expression, Grammar
from metakit.search.optimizer import ChildTask

SWISH_LIKE = 0.1  # `swish_distance` below which a design counts as a close relative of Swish


def swish_distance(expression: Expression, beta: float = 1.0) -> float:
    """How far an activation is from Swish: min over b in [0.5, 2] of max |f(x) - x·σ(bx)| on
    x in [-4, 4] (inf if not finite), taking the best of f(x), -f(x), f(-x) and -f(-x): the
    child's batch norm before and linear layer after an activation absorb either sign flip, so
    the four train the same networks. GELU (≈ x·σ(1.702x)) is 0.02 away; ReLU, the limit
    b -> inf, is 0.14 away, so a threshold of 0.1 keeps Swish's smooth dip below zero."""
    x = torch.linspace(-4, 4, 401)  # symmetric: x.flip(0) == -x
    with torch.no_grad():
        y = expression({"x": x}, torch.tensor(beta)).expand_as(x)
    if not torch.isfinite(y).all():
        return math.inf
    variants = torch.stack([y, -y, y.flip(0), -y.flip(0)])[:, None]
    b = torch.linspace(0.5, 2.0, 31)[:, None]
    return float((variants - x * torch.sigmoid(b * x)).abs().amax(-1).min())


def mark_swish_distance(grammar: Grammar, designs: list[dict[str, Any]]) -> None:
    """Give each design row (with its `tokens`) its `swish_distance`, None where not finite."""
    for t in designs:
        d = swish_distance(grammar.expression(t["tokens"]))
        t["swish_distance"] = round(d, 4) if math.isfinite(d) else None


def probes() -> list[dict[str, torch.Tensor]]:
    """Inputs for `Expression.check`: a wide grid and a standard-normal draw."""
    gen = torch.Generator().manual_seed(0)
    return [{"x": torch.linspace(-6, 6, 121)}, {"x": torch.randn(121, generator=gen)}]


def child_cnn(
    image_shape: tuple[int, int, int],
    classes: int,
    activation: Callable[[], nn.Module],
    channels: tuple[int, ...] = (16, 32, 32),
) -> nn.Sequential:
    """Convolution (3x3, stride 2), batch norm and the activation per stage, then global average
    pooling: a small cousin of the paper's ResNet child. Pooling makes the nonlinearity carry the
    accuracy (with the identity it falls to ~60% on Fashion-MNIST), and batch norm takes the
    activation's scale out of the reward, so shape, not step size, is what is ranked."""
    blocks: list[nn.Module] = [nn.Unflatten(1, image_shape)]
    width = image_shape[0]
    for c in channels:
        blocks += [nn.Conv2d(width, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), activation()]
        width = c
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))


def train_child(
    activation: Callable[[], nn.Module],
    task: ChildTask,
    steps: int = 200,
    lr: float = 3e-3,
    batch_size: int = 128,
    seed: int = 0,
) -> float:
    """Validation accuracy of the child CNN (Adam) after `steps` minibatches; 0 if it diverged."""
    torch.manual_seed(seed)
    net = child_cnn(task.image_shape, task.num_classes, activation)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        idx = torch.randint(len(task.train_x), (batch_size,), generator=gen)
        loss = F.cross_entropy(net(task.train_x[idx]), task.train_y[idx])
        if not torch.isfinite(loss):
            return 0.0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
    net.eval()
    with torch.no_grad():
        logits = torch.cat([net(x) for x in task.val_x.split(1000)])
        if not torch.isfinite(logits).all():
            return 0.0
        return float((logits.argmax(-1) == task.val_y).float().mean())


def activation_reward(expression: Expression, task: ChildTask, steps: int, seed: int) -> float:
    return train_child(lambda: ExpressionActivation(expression), task, steps=steps, seed=seed)


def named_activation(name: str) -> Callable[[], nn.Module]:
    return lambda: make_activation(name)
