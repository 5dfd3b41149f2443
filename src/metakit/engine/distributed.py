"""Multi-process training and evaluation on `torch.distributed` (launched by torchrun).

A run with N processes is the same run as with one: each step's meta-batch of tasks is split
into N contiguous shards (rank r takes tasks `[r·B/N, (r+1)·B/N)` of the step's B), each rank
averages the loss over its shard, and the gradients are averaged with one all-reduce, so every
rank applies the single-process update (up to float32 summation order). Episodes stay a function
of `(seed, index)`, never of the rank. Evaluation shards episodes round-robin and gathers the
per-episode accuracies, so mean and CI are the single-process ones. Rank 0 alone writes the run
directory. gloo on CPU, NCCL on GPU.

BatchNorm running averages are the one state that cannot match one process exactly: one process
folds the step's tasks into its moving averages one after the other, N processes each fold their
shard and then average (`average_buffers`, before each validation and checkpoint; the
averages are linear in the batches), so the ranks agree with each other and the averages see
every task, but differ from the single-process ones by the order of the moving
average. Methods that normalise with batch statistics at test time (MAML's transductive
BatchNorm) are unaffected; parameters and optimizer state are the same as with one process.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from metakit.errors import ConfigError


@dataclass(frozen=True)
class Context:
    """This process's place in the run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, total: int) -> tuple[int, int]:
        """`(offset, count)` of this rank's contiguous share of `total` tasks."""
        if total % self.world:
            raise ConfigError(
                f"the meta-batch ({total} tasks) must be a multiple of the number of processes "
                f"({self.world}); set train.meta_batch accordingly"
            )
        count = total // self.world
        return self.rank * count, count


def setup(device: torch.device) -> Context:
    """Join the process group that torchrun describes in the environment (WORLD_SIZE, RANK,
    MASTER_ADDR, ...); a plain process is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Context(dist.get_rank(), dist.get_world_size())


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


#: seconds this process has spent in gradient all-reduces (the benchmark's communication share)
COMMUNICATION = {"seconds": 0.0}


def average_gradients(params: list[torch.nn.Parameter], ctx: Context) -> None:
    """Replace each gradient by its mean over the ranks (one all-reduce of a flat buffer)."""
    if not ctx.active:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    tic = time.perf_counter()
    dist.all_reduce(flat)
    COMMUNICATION["seconds"] += time.perf_counter() - tic
    flat /= ctx.world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_buffers(module: torch.nn.Module, ctx: Context) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the ranks."""
    if not ctx.active:
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])
    dist.all_reduce(flat)
    flat /= ctx.world
    offset = 0
    for b in buffers:
        b.copy_(flat[offset : offset + b.numel()].view_as(b))
        offset += b.numel()


def mean_over_ranks(values: dict[str, float], ctx: Context) -> dict[str, float]:
    """The mean of each scalar over the ranks (every rank gets the same numbers)."""
    if not ctx.active or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / ctx.world for k, v in zip(keys, t.tolist(), strict=True)}


def max_over_ranks(values: dict[str, float], ctx: Context) -> dict[str, float]:
    """The largest of each scalar over the ranks (a stop flag, the slowest clock), so every
    rank takes the same decision."""
    if not ctx.active or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return dict(zip(keys, t.tolist(), strict=True))


def gather_by_index(values: torch.Tensor, total: int, ctx: Context) -> torch.Tensor:
    """Per-episode values computed round-robin (rank r holds episodes r, r+N, ...) put back in
    episode order on every rank."""
    if not ctx.active:
        return values
    parts: list[torch.Tensor | None] = [None] * ctx.world
    dist.all_gather_object(parts, values.cpu())
    out = torch.empty(total, *values.shape[1:], dtype=values.dtype)
    for r, part in enumerate(parts):
        assert part is not None
        out[r :: ctx.world] = part
    return out


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()


def current() -> Context:
    """The context of an already-joined process group (rank 0 of 1 if there is none)."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size())
    return Context()
