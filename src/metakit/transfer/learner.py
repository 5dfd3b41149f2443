"""`Transfer`: a pretrained backbone adapted to each task's support set.

Modes:
- `extract`: the backbone stays frozen, without its head; a new head (linear, cosine or
  nearest centroid) is fitted on the support features;
- `finetune`: a copy of the backbone with its first `freeze` blocks frozen is fine-tuned on the
  support set together with a new head;
- `scratch`: the same network, freshly initialised (seeded per episode), trained on the support
  set only: the no-transfer reference every transfer mode must beat.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from metakit.algorithms.base import Algorithm
from metakit.data.sampler import stream_seed
from metakit.errors import ConfigError
from metakit.models.backbone import Backbone
from metakit.transfer.finetune import check_freeze, finetune
from metakit.transfer.heads import HEADS, HeadKind, fit_head

Mode = Literal["extract", "finetune", "scratch"]
MODES = ("extract", "finetune", "scratch")


@dataclass
class Fitted:
    """What `Transfer.adapt` returns: the model that scores queries."""

    model: nn.Module


class FrozenFeatures(nn.Module):
    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = self.backbone.embed(x)
        return self.head(z)


def extract(
    backbone: Backbone,
    x: torch.Tensor,
    y: torch.Tensor,
    head: HeadKind,
    steps: int,
    lr: float,
    scale: float = 10.0,
) -> Fitted:
    """A new head fitted on the frozen features of support set `(x, y)`."""
    with torch.no_grad():
        z = backbone.embed(x)
    fitted = fit_head(z, y, int(y.max()) + 1, head, steps, lr, scale=scale)
    return Fitted(FrozenFeatures(backbone, fitted))


def fitted_logits(state: Fitted, query_x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return state.model(query_x)


class Transfer(Algorithm):
    """Adapts `backbone` to each support set by `mode`; `steps`/`lr` drive head fitting
    (extract) or fine-tuning (finetune, scratch); `decay` sets discriminative rates per block;
    `batch_size` (0 = the whole support set) bounds the cost of a step when shots grow."""

    name = "transfer"
    needs_grad_to_adapt = True

    def __init__(
        self,
        backbone: Backbone,
        mode: Mode = "extract",
        head: HeadKind = "linear",
        freeze: int = 0,
        steps: int = 100,
        lr: float | None = None,
        decay: float = 1.0,
        batch_size: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(backbone)
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        if head not in HEADS or (mode != "extract" and head == "centroid"):
            able = HEADS if mode == "extract" else ("linear", "cosine")
            raise ConfigError(f"{mode} takes head {' | '.join(able)}; got {head!r}")
        if mode == "scratch" and freeze:
            raise ConfigError("scratch trains every block from a fresh start; freeze must be 0")
        check_freeze(backbone, freeze)
        if batch_size < 0:
            raise ConfigError(f"batch_size must be >= 0 (0 = whole support set); got {batch_size}")
        self.mode, self.head_kind, self.freeze, self.steps = mode, head, freeze, steps
        self.lr = lr if lr is not None else (0.1 if mode == "extract" else 1e-3)
        self.decay, self.batch_size, self.seed = decay, batch_size, seed
        self._episode = 0

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Fitted:
        ways = int(support_y.max()) + 1
        if self.mode == "extract":
            self.backbone.eval()
            return extract(self.backbone, support_x, support_y, self.head_kind, self.steps, self.lr)
        backbone = self.backbone
        seed = stream_seed(self.seed, self._episode, "transfer")
        self._episode += 1
        if self.mode == "scratch":
            backbone = fresh_copy(backbone, seed)
        model = finetune(
            backbone,
            support_x,
            support_y,
            ways,
            freeze=self.freeze,
            head=self.head_kind,  # type: ignore[arg-type]
            steps=self.steps,
            lr=self.lr,
            decay=self.decay,
            batch_size=self.batch_size,
            seed=seed,
        )
        return Fitted(model)

    def logits(self, state: Fitted, query_x: torch.Tensor) -> torch.Tensor:
        return fitted_logits(state, query_x)

    def meta_loss(self, batch: object) -> tuple[torch.Tensor, dict[str, float]]:
        raise ConfigError(
            "Transfer adapts a pretrained backbone per task and is not trained episodically; "
            "pretrain with the `baseline` algorithm (or any run) and pass it with --from"
        )


def fresh_copy(backbone: Backbone, seed: int) -> Backbone:
    """A copy of `backbone` with every layer re-initialised from `seed` (reproducible)."""
    model = copy.deepcopy(backbone)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % (1 << 63))
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()  # type: ignore[operator]
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
    return model
