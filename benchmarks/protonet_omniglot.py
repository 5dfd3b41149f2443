"""Reproduce Snell et al. 2017 Table 1 (Omniglot) with the four shipped ProtoNet recipes.

Protocol: Omniglot, Vinyals split (rotations as classes), 28x28, Conv-4. Each recipe's model is
trained on `train` with model selection on `val` (or, where the recipe says so, on `trainval`
with a fixed schedule, scoring the last checkpoint, as Snell et al. did), then tested on 1000
fixed-seed episodes of the `test` split with 15 queries per class; accuracy is the mean over
episodes with a 95% CI.
Recipes whose training sections are identical (5w1s/20w1s, 5w5s/20w5s: the paper trains per shot,
60-way) share one trained model; the shared model's checkpoint is selected on the first recipe's
validation setting. Usage:

    python benchmarks/protonet_omniglot.py [--recipes a,b] [--out runs/bench] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import hardware, hardware_line, train_and_evaluate, write_results

PUBLISHED = {  # Snell et al. 2017, Table 1 (Omniglot, Vinyals split), accuracy in %
    "protonet-omniglot-5w1s": 98.8,
    "protonet-omniglot-5w5s": 99.7,
    "protonet-omniglot-20w1s": 96.0,
    "protonet-omniglot-20w5s": 98.9,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--recipes", default=",".join(PUBLISHED))
    parser.add_argument("--out", type=Path, default=Path("runs/bench/protonet_omniglot"))
    parser.add_argument(
        "--results", type=Path, default=Path("benchmarks/results/protonet_omniglot")
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes per recipe")
    args = parser.parse_args()

    rows = train_and_evaluate(
        args.recipes.split(","), args.out, args.overrides, args.episodes, PUBLISHED
    )

    results = {
        "benchmark": "protonet_omniglot",
        "hardware": hardware(),
        "overrides": args.overrides,
        "results": rows,
    }
    lines = [
        f"# Prototypical Networks on Omniglot (Vinyals split, {args.episodes} test episodes, "
        "15 queries/class)",
        "",
        "| recipe | accuracy (%) | 95% CI | published | train time (min) | episodes/s "
        "| peak RSS (MB) | trained by |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        t = r["train"]
        lines.append(
            f"| {r['recipe']} | {100 * r['accuracy']:.2f} | ±{100 * r['ci95']:.2f} | "
            f"{r['published']} | {t['train_seconds'] / 60:.1f} | {t['episodes_per_s']} | "
            f"{t['peak_memory_mb']} | {t['trained_by']} |"
        )
    hw = results["hardware"]
    lines += [
        "",
        hardware_line(hw),
    ]
    write_results(args.results, results, "\n".join(lines) + "\n")
    print(json.dumps({"written": str(args.results.with_suffix(".json"))}))


if __name__ == "__main__":
    main()
