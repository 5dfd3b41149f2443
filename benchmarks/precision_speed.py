"""Training-step time in fp32 and under bf16 autocast (`train.precision`), per recipe.

Protocol: each recipe's own training episodes (its ways, shots, queries, data and model), seed 0;
one timed step = `meta_loss` + backward + Adam step on a pre-sampled episode (sampling is not
timed; it takes under 0.5 ms). The two precisions alternate in rounds (fp32, bf16, fp32, bf16)
from the same initial weights so that drift of a shared virtual CPU hits both; the figure is the
median over all rounds' steps after `--warmup` steps per round. `loss_gap` is the difference of
the first step's losses (same initial weights, same episode). Usage:

    python benchmarks/precision_speed.py [--recipes relation-omniglot-5w1s,...] [--steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from common import hardware, hardware_line, write_results
from metakit.config import Config, load_config
from metakit.data import TaskSource
from metakit.engine.build import build_algorithm, build_dataset
from metakit.engine.trainer import autocast, make_optimizer

RECIPES = "protonet-omniglot-5w1s,matching-omniglot-5w5s,relation-omniglot-5w1s"


def step_times(
    config: Config, dataset: TaskSource, precision: str, steps: int, warmup: int
) -> tuple[list[float], list[float]]:
    t = config.train
    sampler = dataset.sampler(t.split, t.ways, t.shots, t.queries, seed=0)
    torch.manual_seed(0)
    algorithm = build_algorithm(config, dataset.inputs, dataset.task)
    optimizer = make_optimizer(config, algorithm)
    algorithm.train()
    device = torch.device("cpu")
    times, losses = [], []
    for step in range(steps + warmup):
        episode = sampler.sample(step)
        tic = time.perf_counter()
        with autocast(precision, device):
            loss, _ = algorithm.meta_loss(episode)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - tic)
        losses.append(loss.item())
    return times, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=RECIPES)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/precision_speed"))
    args = parser.parse_args()
    hw = hardware()
    rows = []
    for recipe in args.recipes.split(","):
        config = load_config(recipe)
        dataset = build_dataset(config)  # loaded once, shared by every round
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        first: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for precision in ("fp32", "bf16"):
                t, losses = step_times(config, dataset, precision, args.steps, args.warmup)
                times[precision] += t
                first.setdefault(precision, losses)
        fp32, bf16 = (statistics.median(times[p]) * 1000 for p in ("fp32", "bf16"))
        gap = abs(first["fp32"][0] - first["bf16"][0])
        row = {
            "recipe": recipe,
            "fp32_ms": fp32,
            "bf16_ms": bf16,
            "speedup": fp32 / bf16,
            "loss_gap": gap,
            "steps": args.steps * args.rounds,
        }
        print(row, flush=True)
        rows.append(row)
    lines = [
        "# Training-step time, fp32 vs bf16 autocast (median ms per step)",
        "",
        "| recipe | fp32 (ms) | bf16 (ms) | speedup | first-step loss gap |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r['recipe']} | {r['fp32_ms']:.1f} | {r['bf16_ms']:.1f} | {r['speedup']:.2f}x | "
            f"{r['loss_gap']:.4f} |"
            for r in rows
        ),
        "",
        f"{hardware_line(hw)} bf16 units: {', '.join(hw['bf16_units']) or 'none'}.",
        "",
    ]
    write_results(args.results, {"hardware": hw, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
