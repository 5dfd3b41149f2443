"""The `Episode`: one N-way K-shot task, the unit every algorithm consumes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Episode:
    """Support and query sets with labels `0..N-1` (or float regression targets `[K, D]`);
    tensors may carry a leading task dimension."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    @property
    def batched(self) -> bool:
        """True when the tensors hold a meta-batch `[T, ...]` of tasks."""
        return self.support_y.dim() == (3 if self.support_y.is_floating_point() else 2)

    @property
    def ways(self) -> int:
        return int(self.support_y.max()) + 1

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Episode:
        return Episode(*(t.to(device, non_blocking=non_blocking) for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.support_x, self.support_y, self.query_x, self.query_y)

    def tasks(self) -> list[Episode]:
        """Split a batched episode into its tasks (a plain episode is its own single task)."""
        if not self.batched:
            return [self]
        return [
            Episode(*parts) for parts in zip(*(t.unbind(0) for t in self.tensors()), strict=False)
        ]

    @staticmethod
    def stack(episodes: Sequence[Episode]) -> Episode:
        """Stack same-shaped episodes into one batched episode with a leading task dimension."""
        return Episode(
            *(torch.stack(ts) for ts in zip(*(e.tensors() for e in episodes), strict=False))
        )
