"""Activation functions by name, for backbones (`activation: swish`) and the activation search.

`swish` is x * sigmoid(beta * x) with a learnable beta per layer (Ramachandran et al. 2017);
`ExpressionActivation` runs any expression of the activation grammar, with its own beta.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from metakit.errors import ConfigError


class Swish(nn.Module):
    """x * sigmoid(beta x); beta starts at `beta` and is learned unless `learnable=False`."""

    def __init__(self, beta: float = 1.0, learnable: bool = True) -> None:
        super().__init__()
        value = torch.tensor(float(beta))
        self.beta = nn.Parameter(value) if learnable else nn.Buffer(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


class ExpressionActivation(nn.Module):
    """An activation from the grammar (`metakit.search.grammar`), beta learnable per layer."""

    def __init__(self, expression: Callable[..., torch.Tensor], beta: float = 1.0) -> None:
        super().__init__()
        self.expression = expression
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expression({"x": x}, self.beta)

    def extra_repr(self) -> str:
        return str(self.expression)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "swish": Swish,
    "silu": nn.SiLU,  # swish with beta fixed at 1
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
#: activations for which relu(maxpool(x)) == maxpool(act(x)) (monotone non-decreasing)
MONOTONE = {"relu", "elu", "tanh", "sigmoid"}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; available: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()
