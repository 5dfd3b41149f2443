"""Mixed precision: the few computations that must not run in bfloat16 under autocast.

Convolutions and matrix products of a backbone lose little in bf16 (8 mantissa bits), but a
distance or a score near its saturation does: squared Euclidean distance by expansion
(`|a|^2 - 2ab + |b|^2`) cancels catastrophically, a cosine scaled by a temperature of 30 is off
by ~0.1 in the logit, and a sigmoid near 1 moves in steps of 0.004. These run in fp32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def widen(x: Any) -> Any:
    """A floating tensor in at least fp32 (float64 stays float64); anything else unchanged."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.to(torch.promote_types(x.dtype, torch.float32))
    return x


def full_precision(fn: F) -> F:
    """Run `fn` with autocast off and its tensor arguments widened to fp32 whenever it is
    called inside an autocast region; outside one it is called as is."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), None)
        if device is None or not torch.is_autocast_enabled(device):
            return fn(*args, **kwargs)
        with torch.autocast(device, enabled=False):
            return fn(*map(widen, args), **{k: widen(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
