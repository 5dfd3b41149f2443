"""Gradient preprocessing for networks that read gradients (Andrychowicz et al. 2016, App. A).

A gradient coordinate g becomes two inputs of similar scale whatever its magnitude:
`(log|g| / p, sign g)` when `|g| >= e^-p`, else `(-1, e^p g)`.
"""

from __future__ import annotations

import math

import torch


def preprocess_gradient(g: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """`[..., 2]` features of each coordinate of `g`."""
    big = g.abs() >= math.exp(-p)
    log_part = torch.where(big, g.abs().clamp_min(math.exp(-p)).log() / p, torch.full_like(g, -1.0))
    sign_part = torch.where(big, torch.sign(g), math.exp(p) * g)
    return torch.stack([log_part, sign_part], -1)
