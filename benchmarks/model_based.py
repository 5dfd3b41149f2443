"""Model-based meta-learning on Omniglot: MANN (Santoro et al. 2016) and Meta Networks.

MANN protocol: Omniglot, Vinyals split (rotations as classes), 20x20 raw pixels; each test
episode draws classes of the `test` split never seen in training, 10 images per class (1,000
fixed-seed episodes), shuffles them into one sequence (50 steps for 5 classes; a random 100 of
150 for 15 classes) with each label given one step late, and scores each step before its label
is shown. Accuracy by presentation number (1st, 2nd, 3rd, 4th, 5th, 10th instance of a class),
mean over episodes with a 95% CI, beside the paper's Table 1. The same episodes are also scored
as plain N-way 1-shot tasks (support as a labelled prefix, each query as the next step).

MetaNet protocol: as the metric benchmarks, 1,000 fixed-seed `test` episodes, 15 queries/class.

    python benchmarks/model_based.py --recipes mann-omniglot-5class --out runs/model_based
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from common import hardware, hardware_line, metakit, write_results

INSTANCES = ("1", "2", "3", "4", "5", "10")
PUBLISHED = {  # Santoro et al. 2016, Table 1 (MANN, LRUA); Munkhdalai & Yu 2017, Table 1
    "mann-omniglot-5class": dict(zip(INSTANCES, (36.4, 82.8, 91.0, 92.6, 94.9, 98.1), strict=True)),
    "metanet-omniglot-5w1s": {"accuracy": 98.95},
    "metanet-omniglot-20w1s": {"accuracy": 97.00},
}
TARGETS = {  # issue #23
    "mann-omniglot-5class": {"2": 82.0, "5": 92.0, "10": 94.0},
    "metanet-omniglot-5w1s": {"accuracy": 98.0},
    "metanet-omniglot-20w1s": {"accuracy": 95.0},
}


def run(recipe: str, out: Path, episodes: int) -> dict[str, Any]:
    from metakit.config import load_config

    run_dir = out / recipe
    config = load_config(recipe)
    trained_by = recipe
    if recipe == "metanet-omniglot-5w1s" and (out / "metanet-omniglot-20w1s").exists():
        run_dir, trained_by = out / "metanet-omniglot-20w1s", "metanet-omniglot-20w1s"
    summary_file = run_dir / "train_summary.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
    else:
        resume = (run_dir / "checkpoints" / "last.safetensors").exists()
        summary = metakit(
            "train",
            recipe,
            "--out",
            str(run_dir),
            "--no-progress",
            *(["--resume"] if resume else []),
        )
        summary_file.write_text(json.dumps(summary))
    e = config.eval
    start = time.perf_counter()
    result = metakit(
        "eval", str(run_dir), "--json", "--no-progress", "--split", e.split, "--ways", str(e.ways),
        "--shots", str(e.shots), "--queries", str(e.queries), "--episodes", str(episodes),
    )  # fmt: skip
    row = {
        "recipe": recipe,
        "accuracy": result["accuracy"],
        "ci95": result["ci95"],
        "instance_accuracy": result.get("instance_accuracy"),
        "published": PUBLISHED.get(recipe),
        "target": TARGETS.get(recipe),
        "protocol": {
            k: result[k] for k in ("split", "ways", "shots", "queries", "episodes", "seed")
        },
        "eval_seconds": round(time.perf_counter() - start, 1),
        "train": {**summary, "trained_by": trained_by},
    }
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict[str, Any]], hw: dict[str, Any]) -> str:
    lines = ["# Model-based meta-learning on Omniglot (Vinyals split, 1000 test episodes)", ""]
    mann = [r for r in rows if r.get("instance_accuracy")]
    if mann:
        lines += [
            "MANN: accuracy (%) by presentation number of a class within the episode sequence.",
            "",
            "| recipe | " + " | ".join(f"{k}" for k in INSTANCES) + " | N-way 1-shot | train time "
            "(min) | episodes/s | peak RSS (MB) |",
            "|---|" + "---:|" * (len(INSTANCES) + 4),
        ]
        for r in mann:
            cells = []
            for k in INSTANCES:
                a = r["instance_accuracy"][k]
                cells.append(f"{100 * a['accuracy']:.1f} ± {100 * a['ci95']:.1f}")
            t = r["train"]
            lines.append(
                f"| {r['recipe']} | "
                + " | ".join(cells)
                + f" | {100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} | "
                f"{t['train_seconds'] / 60:.1f} | {t['episodes_per_s']} | "
                f"{t.get('peak_memory_mb', '-')} |"
            )
            if r["published"]:
                lines.append(
                    "| published (Santoro et al. 2016) | "
                    + " | ".join(f"{r['published'][k]}" for k in INSTANCES)
                    + " | | | | |"
                )
        lines.append("")
    other = [r for r in rows if not r.get("instance_accuracy")]
    if other:
        lines += [
            "| recipe | accuracy (%) | published | target | train time (min) | episodes/s "
            "| peak RSS (MB) | trained by |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in other:
            t = r["train"]
            lines.append(
                f"| {r['recipe']} | {100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} | "
                f"{(r['published'] or {}).get('accuracy', '')} | "
                f"{(r['target'] or {}).get('accuracy', '')} | {t['train_seconds'] / 60:.1f} | "
                f"{t['episodes_per_s']} | {t.get('peak_memory_mb', '-')} | {t['trained_by']} |"
            )
    lines += ["", hardware_line(hw), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="mann-omniglot-5class,mann-omniglot-15class")
    parser.add_argument("--out", type=Path, default=Path("runs/model_based"))
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/model_based"))
    args = parser.parse_args()
    hw = hardware()
    path = args.results.with_suffix(".json")
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    new = [run(r, args.out, args.episodes) for r in args.recipes.split(",")]
    names = {r["recipe"] for r in new}
    rows = [r for r in old if r["recipe"] not in names] + new
    write_results(args.results, {"hardware": hw, "rows": rows}, markdown(rows, hw))


if __name__ == "__main__":
    main()
