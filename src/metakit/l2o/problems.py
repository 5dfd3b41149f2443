"""Optimizee families for learned optimizers: batches of independent problems in one tensor.

A `ProblemBatch` holds B problems side by side: its parameters carry a leading batch dimension
and `loss(params, step)` returns the B losses. Every rule metakit has (SGD, momentum, RMSprop,
Adam, the coordinatewise LSTM) acts coordinate by coordinate, so stepping the batch is exactly B
separate runs, at the cost of one. Problems are drawn from a `torch.Generator`, so a seed and a
stream name fix them (training, tuning and held-out problems come from separate streams).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from metakit.errors import ConfigError, DataError
from metakit.functional.rules import Params


class ProblemBatch(Protocol):
    params: Params  # initial parameters, each `[B, ...]`

    def loss(self, params: Params, step: int) -> torch.Tensor:
        """The B losses `[B]` at optimization step `step` (minibatch problems vary with it)."""
        ...


class ProblemFamily(Protocol):
    name: str

    def sample(self, count: int, steps: int, generator: torch.Generator) -> ProblemBatch:
        """`count` problems for a run of `steps` optimizer steps."""
        ...


@dataclass
class QuadraticBatch:
    weight: torch.Tensor  # W [B, d, d]
    target: torch.Tensor  # y [B, d]
    params: Params

    def loss(self, params: Params, step: int) -> torch.Tensor:
        residual = torch.einsum("bij,bj->bi", self.weight, params["theta"]) - self.target
        return residual.pow(2).sum(-1)


@dataclass
class QuadraticFamily:
    """f(theta) = ||W theta - y||^2 with W, y and the start theta_0 drawn from N(0, 1) (the
    paper's 10-d quadratics)."""

    dim: int = 10
    name: str = "quadratic"

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ConfigError(f"quadratic dim must be >= 1, got {self.dim}")

    def sample(self, count: int, steps: int, generator: torch.Generator) -> QuadraticBatch:
        d = self.dim
        w = torch.randn(count, d, d, generator=generator)
        y = torch.randn(count, d, generator=generator)
        theta = torch.randn(count, d, generator=generator)
        return QuadraticBatch(w, y, {"theta": theta})


ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}


@dataclass
class MLPBatch:
    images: torch.Tensor  # the pool [N, D] float
    labels: torch.Tensor  # [N]
    batches: torch.Tensor  # minibatch indices [steps + 1, B, batch_size]
    activation: str
    layers: int
    params: Params

    def loss(self, params: Params, step: int) -> torch.Tensor:
        if step >= self.batches.shape[0]:
            raise ConfigError(
                f"these MLP problems were drawn for {self.batches.shape[0] - 1} steps, "
                f"asked for step {step}"
            )
        index = self.batches[step]  # [B, n]
        h = self.images[index]  # [B, n, D]
        act = ACTIVATIONS[self.activation]
        for i in range(self.layers):
            h = torch.baddbmm(params[f"b{i}"].unsqueeze(1), h, params[f"w{i}"])
            if i < self.layers - 1:
                h = act(h)
        return F.cross_entropy(h.transpose(1, 2), self.labels[index], reduction="none").mean(-1)


@dataclass
class MLPFamily:
    """A small MLP classifier (the paper's: one hidden layer of 20 sigmoid units) trained on
    minibatches drawn from an image pool; each problem has its own initialisation and batches."""

    images: torch.Tensor  # [N, D] float
    labels: torch.Tensor  # [N] in 0..classes-1
    hidden: tuple[int, ...] = (20,)
    activation: str = "sigmoid"
    batch_size: int = 128
    name: str = "mlp"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {self.activation!r}; available: {', '.join(ACTIVATIONS)}"
            )
        if not self.hidden or min(self.hidden) < 1 or self.batch_size < 1:
            raise ConfigError("mlp hidden sizes and batch_size must be >= 1")
        if self.images.dim() != 2 or self.images.shape[0] != self.labels.shape[0]:
            raise DataError(
                f"mlp problems need images [N, D] and labels [N], got {list(self.images.shape)} "
                f"and {list(self.labels.shape)}"
            )
        if self.images.shape[0] < self.batch_size:
            raise DataError(
                f"the image pool holds {self.images.shape[0]} examples, fewer than one batch "
                f"of {self.batch_size}"
            )

    def sample(self, count: int, steps: int, generator: torch.Generator) -> MLPBatch:
        sizes = [self.images.shape[1], *self.hidden, int(self.labels.max()) + 1]
        params = {}
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            bound = 1 / math.sqrt(fan_in)  # torch.nn.Linear's default initialisation
            w = torch.rand(count, fan_in, fan_out, generator=generator)
            params[f"w{i}"] = (w * 2 - 1) * bound
            params[f"b{i}"] = (torch.rand(count, fan_out, generator=generator) * 2 - 1) * bound
        # minibatches drawn with replacement, fixed for the run by the generator
        batches = torch.randint(
            self.images.shape[0], (steps + 1, count, self.batch_size), generator=generator
        )
        return MLPBatch(self.images, self.labels, batches, self.activation, len(sizes) - 1, params)


def image_pool(dataset: str, part: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened [0, 1] images and labels of MNIST or Fashion-MNIST, cut into two seeded halves:
    `part="train"` (meta-training and tuning) and `part="heldout"` (evaluation). Uses the official
    training split where present, else the test split (the MNIST copy in ../shared/data)."""
    from metakit.data.mnist import available_splits, load_split

    if part not in ("train", "heldout"):
        raise ConfigError(f"image pool part must be 'train' or 'heldout', got {part!r}")
    splits = available_splits(dataset)
    split = "train" if "train" in splits else "test"
    data = load_split(dataset, split, image_size=28, download=not splits)
    images = data.images.reshape(data.images.shape[0], -1).float() / 255
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    half = order.shape[0] // 2
    index = order[:half] if part == "train" else order[half:]
    return images[index], data.labels[index]


def make_family(spec: dict, part: str = "train") -> ProblemFamily:
    """A family from a config section: `{name: quadratic, dim}` or `{name: mlp, dataset,
    hidden, activation, batch_size}`; `part` picks the image pool half for MLP problems."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name == "quadratic":
        return QuadraticFamily(**spec)
    if name == "mlp":
        dataset = spec.pop("dataset", "mnist")
        if dataset not in ("mnist", "fashion-mnist"):
            raise ConfigError(f"mlp problems read mnist or fashion-mnist, got {dataset!r}")
        images, labels = image_pool(dataset, part, spec.pop("pool_seed", 0))
        hidden = spec.pop("hidden", [20])
        hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        return MLPFamily(images, labels, hidden=hidden, **spec)
    raise ConfigError(f"unknown problem family {name!r}; available: quadratic, mlp")
