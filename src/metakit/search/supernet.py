"""The ENAS macro search space (Pham et al. 2018) with weight sharing.

A network is a stem convolution, `L` layers and a global average pool. Layer `i` applies one op
to the output of layer `i-1` and may add the outputs of any layers before that (skip
connections, resized by average pooling); with skips the sum is averaged. Max-pooling halves the
resolution after the layers in `reductions`. The supernet holds the weights of every op of every
layer; a child (an `Architecture`) runs only its own ops, so two children that pick the same op at
a layer read and train the same tensors, and ops outside a child get no gradient. `ChildNet` is
the same network with only the child's ops, to retrain from scratch or use as a backbone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from metakit.errors import ConfigError
from metakit.search.space import SearchSpace, categorical, skip

OPS = ("conv3x3", "conv5x5", "sep3x3", "sep5x5", "maxpool3x3", "avgpool3x3")


def make_op(name: str, channels: int, searching: bool) -> nn.Module:
    """One op at constant width. While searching, BatchNorm normalises with the batch's own
    statistics and has no affine weights (ENAS): running averages over different children mean
    nothing."""

    def norm() -> nn.Module:
        return nn.BatchNorm2d(channels, affine=not searching, track_running_stats=not searching)

    if name in ("conv3x3", "conv5x5"):
        k = int(name[-1])
        return nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, k, padding=k // 2, bias=False), norm()
        )
    if name in ("sep3x3", "sep5x5"):
        k = int(name[-1])
        return nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            norm(),
        )
    if name == "maxpool3x3":
        return nn.MaxPool2d(3, stride=1, padding=1)
    if name == "avgpool3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ConfigError(f"unknown op {name!r}; choose from {', '.join(OPS)}")


@dataclass(frozen=True)
class Architecture:
    """Per layer an op and the earlier layers (not the one just before) it adds.

    Text form: layers separated by `/`, each `op` or `op<j,k` for skips from layers j and k,
    e.g. `conv3x3/sep5x5/maxpool3x3<0`.
    """

    ops: tuple[str, ...]
    skips: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if not self.ops:
            raise ConfigError("an architecture needs at least one layer")
        if len(self.skips) != len(self.ops):
            raise ConfigError("an architecture needs one skip list per layer")
        for i, (op, sources) in enumerate(zip(self.ops, self.skips, strict=True)):
            if op not in OPS:
                raise ConfigError(f"layer {i}: unknown op {op!r}; choose from {', '.join(OPS)}")
            for j in sources:
                if not 0 <= j < i - 1:
                    raise ConfigError(
                        f"layer {i} has a skip from layer {j}; skips come from earlier layers "
                        f"0..{i - 2} (layer {i - 1} is already its input)"
                    )

    def __str__(self) -> str:
        return "/".join(
            op + (f"<{','.join(map(str, s))}" if s else "")
            for op, s in zip(self.ops, self.skips, strict=True)
        )

    @classmethod
    def parse(cls, text: str) -> Architecture:
        ops, skips = [], []
        for part in text.strip().split("/"):
            op, _, sources = part.partition("<")
            ops.append(op.strip())
            try:
                skips.append(tuple(sorted(int(s) for s in sources.split(",") if s.strip())))
            except ValueError:
                raise ConfigError(
                    f"cannot read layer {part!r} of architecture {text!r}; write e.g. "
                    "'conv3x3/sep5x5/maxpool3x3<0'"
                ) from None
        return cls(tuple(ops), tuple(skips))

    @classmethod
    def load(cls, spec: str | Path) -> Architecture:
        """From its text form, or from a search run's `arch.json` (or the run directory)."""
        path = Path(spec)
        if path.is_dir():
            path = path / "arch.json"
        if path.suffix == ".json" or path.exists():
            if not path.exists():
                raise ConfigError(f"{path} does not exist; give an architecture or a search run")
            try:
                return cls.parse(json.loads(path.read_text())["arch"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(
                    f"{path} is not a search result (no 'arch' entry); give the arch.json of a "
                    "`metakit search arch` run"
                ) from None
        try:
            return cls.parse(str(spec))
        except ConfigError as e:
            raise ConfigError(
                f"{spec!r} is neither a search run (a folder with arch.json) nor an architecture: "
                f"{e}"
            ) from None

    @property
    def layers(self) -> int:
        return len(self.ops)

    @classmethod
    def from_tokens(cls, space: SearchSpace, tokens: Sequence[int]) -> Architecture:
        chosen = space.describe(tokens)
        layers = sum(1 for d in space if d.layer is None)
        ops = tuple(chosen[f"op{i}"] for i in range(layers))
        skips = tuple(
            tuple(
                d.source
                for d in space
                if d.layer == i and d.source is not None and chosen[d.name] == "yes"
            )
            for i in range(layers)
        )
        return cls(ops, skips)


def macro_space(layers: int = 6, ops: Sequence[str] = OPS) -> SearchSpace:
    """Per layer `op{i}`, then its skip decisions from layers `0..i-2`."""
    if layers < 1:
        raise ConfigError(f"a macro space needs at least one layer, got {layers}")
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ConfigError(f"unknown ops {unknown}; choose from {', '.join(OPS)}")
    decisions = []
    for i in range(layers):
        decisions.append(categorical(f"op{i}", ops))
        decisions += [skip(i, j) for j in range(i - 1)]
    return SearchSpace(tuple(decisions))


def default_reductions(layers: int) -> tuple[int, ...]:
    """Halve the resolution after a third and two thirds of the layers."""
    return tuple(sorted({max(0, layers // 3 - 1), max(0, 2 * layers // 3 - 1)}))


class _Net(nn.Module):
    """Stem, layers and pooled features; `layer_op(i, op)` picks the module of layer i's op."""

    def __init__(
        self, in_channels: int, channels: int, layers: int, reductions: Sequence[int] | None
    ) -> None:
        super().__init__()
        if channels < 1 or in_channels < 1:
            raise ConfigError("channels and in_channels must be >= 1")
        self.channels, self.num_layers = channels, layers
        self.reductions = tuple(default_reductions(layers) if reductions is None else reductions)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )

    def layer_op(self, i: int, op: str) -> nn.Module:
        raise NotImplementedError

    def features(self, x: torch.Tensor, arch: Architecture) -> torch.Tensor:
        """Pooled features `[N, channels]`."""
        if arch.layers != self.num_layers:
            raise ConfigError(
                f"architecture has {arch.layers} layers, this network {self.num_layers}"
            )
        h = self.stem(x)
        outs: list[torch.Tensor] = []
        for i, (op, sources) in enumerate(zip(arch.ops, arch.skips, strict=True)):
            y = self.layer_op(i, op)(h)
            if sources:
                size = y.shape[-1]
                for j in sources:
                    s = outs[j]
                    y = y + (F.avg_pool2d(s, s.shape[-1] // size) if s.shape[-1] != size else s)
                y = y / (1 + len(sources))
            if i in self.reductions:
                y = F.max_pool2d(y, 2)
            outs.append(y)
            h = y
        return F.relu(h).mean((-2, -1))


class Supernet(_Net):
    """Every op of every layer, shared by all children, and a linear classifier."""

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 32,
        layers: int = 6,
        num_classes: int = 10,
        ops: Sequence[str] = OPS,
        reductions: Sequence[int] | None = None,
    ) -> None:
        super().__init__(in_channels, channels, layers, reductions)
        self.ops = tuple(ops)
        self.layers = nn.ModuleList(
            nn.ModuleDict({op: make_op(op, channels, searching=True) for op in self.ops})
            for _ in range(layers)
        )
        self.classifier = nn.Linear(channels, num_classes)

    def layer_op(self, i: int, op: str) -> nn.Module:
        if op not in self.layers[i]:
            raise ConfigError(f"op {op!r} is not in this supernet's ops {self.ops}")
        return self.layers[i][op]

    def forward(self, x: torch.Tensor, arch: Architecture) -> torch.Tensor:
        return self.classifier(self.features(x, arch))


class ChildNet(_Net):
    """One architecture's ops only (fresh weights, BatchNorm with running statistics)."""

    def __init__(
        self,
        arch: Architecture,
        in_channels: int = 1,
        channels: int = 32,
        num_classes: int = 0,
        reductions: Sequence[int] | None = None,
    ) -> None:
        super().__init__(in_channels, channels, arch.layers, reductions)
        self.arch = arch
        self.layers = nn.ModuleList(make_op(op, channels, searching=False) for op in arch.ops)
        self.classifier = nn.Linear(channels, num_classes) if num_classes else nn.Identity()

    def layer_op(self, i: int, op: str) -> nn.Module:
        return self.layers[i]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x, self.arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
