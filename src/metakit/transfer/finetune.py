"""Fine-tuning a pretrained backbone with its first N blocks frozen.

Frozen blocks keep their weights and run in eval mode (BatchNorm uses the source statistics),
so their output is computed once, without a graph, and only the trainable top is run per step.
The trainable blocks get discriminative learning rates: block `i` (counted from the top) gets
`lr * decay**i`, and the new head gets `lr`, as in ULMFiT-style fine-tuning.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from metakit.errors import ConfigError
from metakit.models.backbone import Backbone
from metakit.transfer.heads import HeadKind, make_head


def check_freeze(backbone: Backbone, freeze: int) -> None:
    blocks = len(backbone.features)
    if not 0 <= freeze <= blocks:
        raise ConfigError(f"freeze must lie in 0..{blocks} (the backbone has {blocks} blocks)")


def freeze_blocks(backbone: Backbone, freeze: int) -> Backbone:
    """Stop gradients to the first `freeze` blocks and put them in eval mode (in place)."""
    check_freeze(backbone, freeze)
    for block in backbone.features[:freeze]:
        block.requires_grad_(False)
        block.eval()
    return backbone


def param_groups(
    backbone: Backbone, head: nn.Module, lr: float, decay: float, freeze: int
) -> list[dict[str, object]]:
    """Optimizer groups: the head at `lr`, trainable block `i` from the top at `lr * decay**i`."""
    check_freeze(backbone, freeze)
    blocks = list(backbone.features)
    groups: list[dict[str, object]] = [{"params": list(head.parameters()), "lr": lr}]
    for depth, block in enumerate(reversed(blocks[freeze:]), start=1):
        groups.append({"params": list(block.parameters()), "lr": lr * decay**depth})
    return [g for g in groups if g["params"]]


class FineTuned(nn.Module):
    """The fine-tuned copy: frozen bottom, trainable top and the new head."""

    def __init__(self, backbone: Backbone, head: nn.Module, freeze: int) -> None:
        super().__init__()
        self.backbone, self.head, self.freeze = backbone, head, freeze

    def bottom(self, x: torch.Tensor) -> torch.Tensor:
        if self.backbone.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return self.backbone.features[: self.freeze](x)

    def top(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.features[self.freeze :](h).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.bottom(x))

    def train(self, mode: bool = True) -> FineTuned:
        super().train(mode)
        for block in self.backbone.features[: self.freeze]:
            block.eval()  # frozen blocks always use the source statistics
        return self


def minibatches(n: int, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        order = torch.randperm(n, generator=generator)
        yield from order.split(size)


def finetune(
    backbone: Backbone,
    x: torch.Tensor,
    y: torch.Tensor,
    classes: int,
    freeze: int = 0,
    head: HeadKind = "linear",
    steps: int = 100,
    lr: float = 1e-3,
    decay: float = 1.0,
    batch_size: int = 0,
    weight_decay: float = 0.0,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    val_every: int = 10,
    patience: int = 5,
    seed: int = 0,
) -> FineTuned:
    """Fine-tune a copy of `backbone` (the original is left untouched) with a new head.

    `batch_size` 0 means full batch. With `val`, accuracy on it is checked every `val_every`
    steps; training stops after `patience` checks without improvement and the best state is kept.
    """
    if steps < 0 or lr <= 0 or decay <= 0:
        raise ConfigError("fine-tuning needs steps >= 0, lr > 0 and decay > 0")
    g = torch.Generator().manual_seed(seed)
    model_backbone = freeze_blocks(copy.deepcopy(backbone), freeze)
    with torch.random.fork_rng(devices=[]):  # the new head's init depends on `seed` only
        torch.manual_seed(seed % (1 << 63))
        new_head = make_head(head, backbone.out_dim, classes).to(x.device)
    model = FineTuned(model_backbone, new_head, freeze).train()
    optimizer = torch.optim.Adam(
        param_groups(model_backbone, new_head, lr, decay, freeze), weight_decay=weight_decay
    )
    h = model.bottom(x)  # frozen blocks: computed once
    h_val = model.bottom(val[0]) if val is not None else None
    batches = minibatches(len(x), batch_size or len(x), g)
    best, best_state, waited = -1.0, None, 0
    with torch.enable_grad():
        for step in range(1, steps + 1):
            idx = next(batches)
            loss = F.cross_entropy(model.top(h[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if val is not None and h_val is not None and (step % val_every == 0 or step == steps):
                model.eval()
                with torch.no_grad():
                    acc = (model.top(h_val).argmax(-1) == val[1]).float().mean().item()
                model.train()
                if acc > best:
                    best, best_state, waited = acc, copy.deepcopy(model.state_dict()), 0
                else:
                    waited += 1
                    if waited >= patience:
                        break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval().requires_grad_(False)
