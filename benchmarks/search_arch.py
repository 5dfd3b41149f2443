"""Architecture search (ENAS macro space, weight sharing) on Fashion-MNIST: the RNN controller
against random search at an equal number of evaluations, and the retrained architecture against
Conv-4 at an equal or larger parameter count.

Protocol: Fashion-MNIST official IDX files; a seeded validation split of 5,000 training images
(rewards and the choice of the derived architecture only), the other 55,000 for the shared and
retrained weights; the 10,000 test images are scored once per retrained network. For each seed,
the controller and random search run the same number of epochs (`--epochs`, each 50 shared
minibatches of 64 and 10 rewarded children on 500 validation images), so both see the same
number of sampled children and evaluations; each derives the best of 20 sampled children on the
same 2,000 validation images and retrains it from scratch for `--retrain-epochs` (SGD Nesterov
0.05, cosine, batch 64, flips). Conv-4 (hidden width chosen as the smallest whose parameter count
is at least the controller architecture's) is retrained with the same settings. Means over seeds
with a t-based 95% CI; the paired controller − random difference per seed.

    python benchmarks/search_arch.py --seeds 0,1,2 --epochs 60 --retrain-epochs 3 --out runs/search
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from common import hardware, hardware_line, metakit, seed_mean_ci, write_results


def search(policy: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    run_dir = args.out / f"{policy}-seed{seed}"
    if (run_dir / "result.json").exists():
        return json.loads((run_dir / "result.json").read_text())
    resume = (run_dir / "checkpoints" / "last.safetensors").exists()
    start = time.perf_counter()
    result = metakit(
        "search", "arch", "--out", str(run_dir), "--seed", str(seed), "--policy", policy,
        "--no-progress",
        *(["--resume"] if resume else [
            "--budget", "0", "--set", f"epochs={args.epochs}",
            "--set", f"retrain_epochs={args.retrain_epochs}",
        ]),
    )  # fmt: skip
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    return result


def conv4_baseline(params: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Conv-4 with the smallest hidden width whose parameter count is >= `params`, retrained as
    the searched architectures are."""
    import torch

    from metakit import create_backbone
    from metakit.search.arch import load_search_config, retrain
    from metakit.search.child import load_image_data
    from metakit.search.supernet import parameter_count

    config = load_search_config(
        overrides=[f"seed={seed}", f"retrain_epochs={args.retrain_epochs}", "budget=0"]
    )
    hidden = 8
    while parameter_count(create_backbone("conv4", hidden=hidden, num_classes=10)) < params:
        hidden += 1
    torch.manual_seed(seed + 2)
    net = create_backbone("conv4", hidden=hidden, num_classes=10)
    data = load_image_data(config.dataset, config.val_images, seed)
    path = args.out / f"conv4-seed{seed}.safetensors"
    start = time.perf_counter()
    row = retrain(net, config, data, path)
    return {"seed": seed, "hidden": hidden, **row, "wall_seconds": time.perf_counter() - start}


def markdown(results: dict[str, Any]) -> str:
    rows, conv4 = results["rows"], results["conv4"]
    lines = [
        "# Architecture search on Fashion-MNIST (ENAS macro space, weight sharing)",
        "",
        "| policy | seed | derived architecture | evaluations | val acc (shared weights) | "
        "test acc (retrained) | params | search min | retrain min |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["policy"], r["seed"])):
        lines.append(
            f"| {r['policy']} | {r['seed']} | `{r['arch']}` | {r['evaluations']} | "
            f"{100 * r['derived_val_accuracy']:.2f} | {100 * r['test_accuracy']:.2f} ± "
            f"{100 * r['test_ci95']:.2f} | {r['params']} | {r['search_seconds'] / 60:.1f} | "
            f"{r['retrain_seconds'] / 60:.1f} |"
        )
    for r in sorted(conv4, key=lambda r: r["seed"]):
        lines.append(
            f"| Conv-4 (hidden {r['hidden']}) | {r['seed']} | | | | "
            f"{100 * r['test_accuracy']:.2f} ± {100 * r['test_ci95']:.2f} | {r['params']} | | "
            f"{r['retrain_seconds'] / 60:.1f} |"
        )
    lines += ["", "Over seeds (mean ± t-based 95% CI):", ""]
    for key, s in results["summary"].items():
        ci = f" ± {100 * s['ci95']:.2f}" if s["ci95"] is not None else ""
        lines.append(f"- {key}: {100 * s['mean']:.2f}{ci} (n = {s['n']})")
    lines += ["", hardware_line(results["hardware"]), ""]
    return "\n".join(lines)


def summarise(rows: list[dict], conv4: list[dict]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def put(name: str, values: list[float]) -> None:
        if values:
            out[name] = seed_mean_ci(values)

    for policy in ("controller", "random"):
        mine = [r for r in rows if r["policy"] == policy]
        put(f"{policy} test accuracy", [r["test_accuracy"] for r in mine])
        put(f"{policy} derived val accuracy", [r["derived_val_accuracy"] for r in mine])
    by = {(r["policy"], r["seed"]): r for r in rows}
    seeds = sorted({s for p, s in by if p == "controller"} & {s for p, s in by if p == "random"})
    for metric in ("test_accuracy", "derived_val_accuracy"):
        put(
            f"controller - random {metric.replace('_', ' ')} (paired)",
            [by["controller", s][metric] - by["random", s][metric] for s in seeds],
        )
    put("Conv-4 test accuracy", [r["test_accuracy"] for r in conv4])
    cseeds = sorted({r["seed"] for r in conv4} & {s for p, s in by if p == "controller"})
    c4 = {r["seed"]: r for r in conv4}
    put(
        "controller - Conv-4 test accuracy (paired)",
        [by["controller", s]["test_accuracy"] - c4[s]["test_accuracy"] for s in cseeds],
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--policies", default="controller,random")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--retrain-epochs", type=float, default=3.0)
    parser.add_argument("--no-conv4", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("runs/search"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/search_arch"))
    args = parser.parse_args()
    hw = hardware()
    path = args.results.with_suffix(".json")
    old = json.loads(path.read_text()) if path.exists() else {"rows": [], "conv4": []}
    rows = {(r["policy"], r["seed"]): r for r in old["rows"]}
    conv4 = {r["seed"]: r for r in old["conv4"]}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for policy in args.policies.split(","):
            row = {**search(policy, seed, args), "policy": policy, "seed": seed}
            row["cpu"] = hw["cpu"]
            rows[policy, seed] = row
            print(json.dumps(row), flush=True)
            results = {"hardware": hw, "rows": list(rows.values()), "conv4": list(conv4.values())}
            results["summary"] = summarise(results["rows"], results["conv4"])
            write_results(args.results, results, markdown(results))
        if not args.no_conv4 and ("controller", seed) in rows:
            conv4[seed] = conv4_baseline(rows["controller", seed]["params"], seed, args)
            conv4[seed]["cpu"] = hw["cpu"]
            print(json.dumps(conv4[seed]), flush=True)
        results = {"hardware": hw, "rows": list(rows.values()), "conv4": list(conv4.values())}
        results["summary"] = summarise(results["rows"], results["conv4"])
        write_results(args.results, results, markdown(results))
    print(json.dumps(results["summary"], indent=2))


if __name__ == "__main__":
    main()
