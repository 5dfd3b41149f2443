"""Balanced same/different pairs from a labelled batch, for verification losses (Siamese)."""

from __future__ import annotations

import torch

from metakit.errors import DataError


def balanced_pairs(
    labels: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two pairs per example: one with another example of its class, one with an example of a
    different class. Returns `(first, second, same)`: index tensors `[2N]` and float targets
    `[2N]` (half ones, half zeros), so the labels are exactly balanced.
    """
    n = labels.shape[0]
    same_class = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(n, dtype=torch.bool, device=labels.device)
    positives = same_class & ~eye
    negatives = ~same_class
    if not bool(positives.any(1).all()):
        raise DataError(
            "balanced pairs need at least two examples of every class in the batch; raise the "
            "training shots + queries to 2 or more"
        )
    if not bool(negatives.any(1).all()):
        raise DataError("balanced pairs need at least two classes in the batch")
    noise = torch.rand(2, n, n, generator=generator, device=labels.device)
    # a uniformly random allowed partner per row: the largest noise among the allowed columns
    partner_same = noise[0].masked_fill(~positives, -1).argmax(1)
    partner_diff = noise[1].masked_fill(~negatives, -1).argmax(1)
    anchors = torch.arange(n, device=labels.device)
    first = torch.cat([anchors, anchors])
    second = torch.cat([partner_same, partner_diff])
    same = torch.cat([torch.ones(n), torch.zeros(n)]).to(labels.device)
    return first, second, same
