"""BatchNorm modes for gradient-based meta-learning, which change published numbers.

"transductive" (the MAML paper's numbers): every forward normalises with the statistics of the
batch it sees, so a query's prediction depends on the other queries of its task.
"support" (non-transductive): queries are normalised with statistics of the task's support set
only. `SupportBatchNorm` does that when the forward runs inside `statistics_from_first(n)` on
`cat([support, query])`: the first `n` rows give the statistics for all rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

BNMode = Literal["transductive", "support"]
BN_MODES: tuple[str, ...] = ("transductive", "support")

_STAT_ROWS: ContextVar[int | None] = ContextVar("metakit_bn_stat_rows", default=None)


@contextlib.contextmanager
def statistics_from_first(rows: int) -> Iterator[None]:
    """Inside this block, `SupportBatchNorm` layers take their statistics from the first rows."""
    token = _STAT_ROWS.set(rows)
    try:
        yield
    finally:
        _STAT_ROWS.reset(token)


class SupportBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm with batch statistics taken from the leading `rows` of the batch, if set."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _STAT_ROWS.get()
        if rows is None:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        dims = [0, *range(2, x.dim())]
        ref = x[:rows]
        mean = ref.mean(dim=dims, keepdim=True)
        var = ref.var(dim=dims, unbiased=False, keepdim=True)
        shape = [1, -1] + [1] * (x.dim() - 2)
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def use_batch_statistics(module: nn.Module, mode: BNMode = "transductive") -> None:
    """Make every BatchNorm normalise with batch statistics (no running averages) in `mode`."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
            if mode == "support":
                m.__class__ = SupportBatchNorm  # same parameters, same state-dict keys
