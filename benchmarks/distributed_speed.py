"""Training throughput with torch.distributed on one machine: 1 process at 1 thread, 1 process
at all threads, and N processes at 1 thread each (the fair comparison on a CPU with N cores).

Protocol: `metakit train RECIPE --nproc N` from scratch for a fixed number of steps, training
time only (validation excluded, first step included), tasks (episodes) per second from the run's
summary, and the share of the step time spent in the gradient all-reduce. MAML: second order,
Omniglot 5-way 1-shot, 15 queries, meta-batch 8 (per step: 8 tasks split over the processes).
ProtoNet: Omniglot 60-way 1-shot 5 queries, meta-batch 2 (one episode per process).

    python benchmarks/distributed_speed.py [--steps-maml 40 --steps-protonet 60] [--nproc 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import hardware, hardware_line, write_results

CASES = {
    "maml": ("maml-omniglot-5w1s", ["train.meta_batch=8"]),
    "protonet": ("protonet-omniglot-5w1s", ["train.meta_batch=2"]),
}


def run(recipe: str, sets: list[str], steps: int, nproc: int, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-m", "metakit.cli", "train", recipe, "--out", f"{tmp}/run"]
        args += ["--no-progress", "--nproc", str(nproc)]
        for s in [*sets, f"train.episodes={steps}", f"train.val_every={steps}",
                  "train.val_episodes=10", "train.log_every=1000000"]:  # fmt: skip
            args += ["--set", s]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "processes": nproc,
        "threads_per_process": threads,
        "steps": summary["steps"],
        "tasks_per_s": summary["episodes_per_s"],
        "train_seconds": summary["train_seconds"],
        "allreduce_share": round(summary["allreduce_seconds"] / summary["train_seconds"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-maml", type=int, default=40)
    parser.add_argument("--steps-protonet", type=int, default=60)
    parser.add_argument("--nproc", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--results", type=Path, default=Path("benchmarks/results/distributed_speed")
    )
    args = parser.parse_args()
    hw = hardware()
    rows = []
    for name, (recipe, sets) in CASES.items():
        steps = args.steps_maml if name == "maml" else args.steps_protonet
        base = None
        for nproc, threads in ((1, 1), (1, args.nproc), (args.nproc, 1)):
            row = {"case": name, "recipe": recipe, **run(recipe, sets, steps, nproc, threads)}
            base = base or row["tasks_per_s"]
            row["speedup_vs_1x1"] = round(row["tasks_per_s"] / base, 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [
        "# Distributed training throughput (torch.distributed, gloo, one machine)",
        "",
        "| case | processes x threads | tasks/s | speed-up vs 1x1 | all-reduce share | steps |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['processes']} x {r['threads_per_process']} | {r['tasks_per_s']} "
            f"| {r['speedup_vs_1x1']} | {100 * r['allreduce_share']:.1f}% | {r['steps']} |"
        )
    lines += ["", hardware_line(hw), ""]
    write_results(args.results, {"hardware": hw, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
