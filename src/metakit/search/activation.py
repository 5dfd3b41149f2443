"""Activation search (Ramachandran et al. 2017): a grammar expression as an activation function,
rewarded by the short training of a small child network that uses it in every hidden layer."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from metakit.models.activations import ExpressionActivation, make_activation
from metakit.search.grammar import Expression
from metakit.search.optimizer import ChildTask


def probes() -> list[dict[str, torch.Tensor]]:
    """Inputs for `Expression.check`: a wide grid and a standard-normal draw."""
    gen = torch.Generator().manual_seed(0)
    return [{"x": torch.linspace(-6, 6, 121)}, {"x": torch.randn(121, generator=gen)}]


def child_mlp(
    inputs: int, classes: int, hidden: int, layers: int, activation: Callable[[], nn.Module]
) -> nn.Sequential:
    blocks: list[nn.Module] = []
    width = inputs
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), activation()]
        width = hidden
    return nn.Sequential(*blocks, nn.Linear(width, classes))


def train_child(
    activation: Callable[[], nn.Module],
    task: ChildTask,
    steps: int = 300,
    lr: float = 3e-3,
    batch_size: int = 128,
    hidden: int = 64,
    layers: int = 3,
    seed: int = 0,
) -> float:
    """Validation accuracy of an MLP (Adam) after `steps` minibatches; 0 if it diverged."""
    torch.manual_seed(seed)
    net = child_mlp(task.train_x.shape[1], task.num_classes, hidden, layers, activation)
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
    with torch.no_grad():
        logits = net(task.val_x)
        if not torch.isfinite(logits).all():
            return 0.0
        return float((logits.argmax(-1) == task.val_y).float().mean())


def activation_reward(expression: Expression, task: ChildTask, steps: int, seed: int) -> float:
    return train_child(lambda: ExpressionActivation(expression), task, steps=steps, seed=seed)


def named_activation(name: str) -> Callable[[], nn.Module]:
    return lambda: make_activation(name)
