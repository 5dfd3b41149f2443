"""MAML meta-training throughput: tasks/s, peak memory and GFLOP/s, vectorised vs loop.

Protocol: Omniglot (Vinyals train split), 5-way 1-shot, 15 queries per class, 28x28, Conv-4
(max-pool blocks, channels_last on CPU), meta-batch 32, one inner SGD step (lr 0.4), Adam outer
step. One timed "meta-iteration" = meta_loss + backward + optimizer step on a pre-sampled batch
(sampling is timed separately); tasks/s is 32 over the median time of the timed
meta-iterations (the mean is reported too: other tenants of a shared virtual CPU move it by up
to 30%). The first block's convolution runs as a patch matrix product on CPU (`PatchConv2d`).
Each (order, path) setting runs in its own process, so its peak RSS is its own. FLOPs of one
meta-iteration are counted with torch's FlopCounterMode; the
machine's peak is measured with a large float32 matrix product. Usage:

    python benchmarks/maml_throughput.py [--iters 20] [--results benchmarks/results/maml_throughput]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import hardware, write_results

# both loop paths first: a vmap process (GBs of RSS) measurably slowed the process after it
# (first-order loop 14.8 tasks/s right after second-order vmap, 17.2 alone)
SETTINGS = [(order, path) for path in ("loop", "vmap") for order in ("second", "first")]


def matmul_peak_gflops(n: int = 2048, repeat: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        tic = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - tic)
    return 2 * n**3 / best / 1e9


def one_setting(order: str, path: str, iters: int, warmup: int, device: str) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from metakit.config import load_config
    from metakit.engine.build import build_algorithm, build_dataset
    from metakit.engine.memory import keep_freed_memory, peak_memory_mb

    config = load_config(
        "maml-omniglot-5w1s",
        [f"algorithm.first_order={order == 'first'}", f"algorithm.vectorize={path}"],
    )
    if device == "cpu":
        keep_freed_memory()  # as the trainer does
    dataset = build_dataset(config)
    sampler = dataset.sampler("train", 5, 1, 15, seed=0)
    algorithm = build_algorithm(config, dataset.inputs, dataset.task).to(device)
    optimizer = torch.optim.Adam(algorithm.parameters(), lr=1e-3)
    tic = time.perf_counter()
    batches = [sampler.batch(i * 32, 32).to(device) for i in range(warmup + iters)]
    sample_s = (time.perf_counter() - tic) / len(batches)

    def step(batch) -> None:  # type: ignore[no-untyped-def]
        loss, _ = algorithm.meta_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for b in batches[:warmup]:
        step(b)
    times = []
    for b in batches[warmup:]:
        if device == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        step(b)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - tic)
    # FLOPs are counted after the timing: a FlopCounterMode leaves the process ~25% slower
    # (measured: 16.5 → 12.0 tasks/s first order), which hid part of the speed in earlier runs
    counter = FlopCounterMode(display=False)
    with counter:
        step(batches[0])
    flops = counter.get_total_flops()
    seconds = statistics.median(times)  # robust to other tenants of a shared (virtual) CPU
    mean = sum(times) / len(times)
    return {
        "order": order,
        "path": path,
        "tasks_per_s": round(32 / seconds, 2),
        "tasks_per_s_mean": round(32 / mean, 2),
        "seconds_per_meta_iteration": round(seconds, 4),
        "sampling_seconds_per_meta_batch": round(sample_s, 4),
        "gflop_per_meta_iteration": round(flops / 1e9, 2),
        "achieved_gflops": round(flops / seconds / 1e9, 1),
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if device == "cuda"
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=20, help="timed meta-iterations")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/maml_throughput"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one setting and exit
    args = parser.parse_args()
    if args.one:
        order, path = args.one.split(",")
        print(json.dumps(one_setting(order, path, args.iters, args.warmup, args.device)))
        return

    rows = []
    for order, path in SETTINGS:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                f"{order},{path}",
                "--iters",
                str(args.iters),
                "--warmup",
                str(args.warmup),
                "--device",
                args.device,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        # FlopCounterMode counts a vmapped convolution (per-task weights) as a dense one over all
        # tasks' channels, so the algorithm's work is the loop path's count for the same order
        work = next((r for r in rows if r["order"] == order and r["path"] == "loop"), row)
        row["algorithm_gflop_per_meta_iteration"] = work["gflop_per_meta_iteration"]
        row["achieved_gflops"] = round(
            work["gflop_per_meta_iteration"] / row["seconds_per_meta_iteration"], 1
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    peak = matmul_peak_gflops() if args.device == "cpu" else None
    results = {
        "benchmark": "maml_throughput",
        "protocol": "Omniglot Vinyals train split, 5-way 1-shot, 15 queries/class, Conv-4 28x28, "
        "meta-batch 32, 1 inner SGD step (lr 0.4), Adam outer step, transductive BatchNorm",
        "device": args.device,
        "hardware": hardware(),
        "matmul_peak_gflops": None if peak is None else round(peak, 1),
        "reference_tasks_per_s": {"second": 6.7, "first": 7.6},
        "results": rows,
    }
    lines = [
        "# MAML meta-training throughput (Omniglot 5-way 1-shot, 15 queries, Conv-4, "
        "meta-batch 32, 1 inner step)",
        "",
        "| order | path | tasks/s (median) | tasks/s (mean) | s / meta-iteration | "
        "GFLOP / meta-iteration | GFLOP/s | peak RSS (MB) |",  # GFLOP: the loop path's count
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['order']} | {r['path']} | {r['tasks_per_s']} | {r['tasks_per_s_mean']} | "
            f"{r['seconds_per_meta_iteration']} | {r['algorithm_gflop_per_meta_iteration']} | "
            f"{r['achieved_gflops']} | {r['peak_memory_mb']} |"
        )
    hw = results["hardware"]
    lines += [
        "",
        f"Device {args.device}; {hw['cpu']}, {hw['cores']} cores, torch {hw['torch']}, "
        f"GPU: {hw['gpu']}. Measured float32 matmul peak: {results['matmul_peak_gflops']} "
        "GFLOP/s. Reference (most used PyTorch MAML library, same machine): 6.7 tasks/s second "
        "order, 7.6 first order.",
    ]
    write_results(args.results, results, "\n".join(lines) + "\n")
    print(json.dumps({"written": str(args.results.with_suffix(".json"))}))


if __name__ == "__main__":
    main()
