"""Learned optimizers (Andrychowicz et al. 2016) against tuned hand-written rules.

Protocol: `metakit train l2o-quadratic` / `l2o-mnist` meta-trains the coordinatewise LSTM
(2 layers x 20, preprocessing p = 10, output x 0.1, truncated BPTT of 20 steps over a 100-step
horizon, second derivatives dropped). Each baseline (SGD, momentum 0.9, Nesterov 0.9, RMSprop
0.99, Adam) has its rate tuned on the log grid 1e-4 .. 10 (half decades) by the mean final loss
on 32 tuning problems of their own stream. Everything is then run on the same held-out problems
(100 by default): 10-d quadratics ||W theta - y||^2 with W, y, theta_0 ~ N(0, 1); MLPs (one
hidden layer of 20 sigmoid units, batch 128) on the held-out half of the MNIST pool (the
meta-training and tuning problems use the other half; the pool is the official training split
where present, else the test split). Reported: mean final loss and mean loss over the run (area
under the curve), each with a 95% CI over problems. Generalisation rows reuse the MNIST-trained
optimizer on problems it never saw: 200 steps, 40 hidden units, two hidden layers, ReLU, and
Fashion-MNIST; the baselines are re-tuned for each row.

    python benchmarks/learned_optimizers.py --out runs/l2o
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from common import hardware, hardware_line, trained_run, write_results

ROWS: list[tuple[str, str, dict[str, Any], int | None]] = [
    # (row name, recipe, problem overrides, steps)
    ("quadratic 10-d, 100 steps", "l2o-quadratic", {}, None),
    ("MNIST MLP 20 sigmoid, 100 steps", "l2o-mnist", {}, None),
    ("MNIST, 200 steps", "l2o-mnist", {}, 200),
    ("MNIST, 40 hidden units", "l2o-mnist", {"hidden": [40]}, None),
    ("MNIST, two hidden layers", "l2o-mnist", {"hidden": [20, 20]}, None),
    ("MNIST, ReLU", "l2o-mnist", {"activation": "relu"}, None),
    ("Fashion-MNIST MLP, 100 steps", "l2o-mnist", {"dataset": "fashion-mnist"}, None),
]
RULES = ("learned", "sgd", "momentum", "nesterov", "rmsprop", "adam")


def trained(recipe: str, out: Path) -> dict[str, Any]:
    return trained_run(recipe, out / recipe)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.6), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        for name in RULES:
            r = row["results"][name]
            mean = r["curve"]
            lo = [m - c for m, c in zip(mean, r["curve_ci95"], strict=True)]
            hi = [m + c for m, c in zip(mean, r["curve_ci95"], strict=True)]
            line = ax.plot(mean, label=name, lw=2 if name == "learned" else 1)[0]
            ax.fill_between(range(len(mean)), lo, hi, color=line.get_color(), alpha=0.2)
        ax.set_yscale("log")
        ax.set_title(row["row"], fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("loss (mean, 95% CI band)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width of the per-problem differences a - b."""
    import torch

    from metakit.engine.evaluate import mean_ci95

    return mean_ci95(torch.tensor(a) - torch.tensor(b))


def table(rows: list[dict[str, Any]], summaries: dict[str, Any], hw: dict[str, Any]) -> str:
    lines = [
        "# Learned optimizers vs tuned baselines",
        "",
        "Final loss (mean ± 95% CI over held-out problems); tuned rate in brackets. **bold**: the "
        "lowest mean. `learned < adam`: the learned optimizer's mean final loss is below tuned "
        "Adam's; in brackets the mean per-problem difference (learned - Adam on the same "
        "problem) with its 95% CI.",
        "",
        "| problems | " + " | ".join(RULES) + " | learned < adam |",
        "|---" * (len(RULES) + 2) + "|",
    ]
    for row in rows:
        res = row["results"]
        best = min(RULES, key=lambda n: res[n]["final_loss"])
        cells = []
        for name in RULES:
            r = res[name]
            text = f"{r['final_loss']:.4g} ± {r['final_ci95']:.2g}"
            text = f"**{text}**" if name == best else text
            cells.append(text + (f" [{r['lr']:.3g}]" if "lr" in r else ""))
        diff, ci = paired(res["learned"]["final_losses"], res["adam"]["final_losses"])
        wins = f"{'yes' if diff < 0 else 'no'} (paired {diff:+.3g} ± {ci:.2g})"
        lines.append(f"| {row['row']} ({row['problems']}) | " + " | ".join(cells) + f" | {wins} |")
    lines += ["", "Area under the curve (mean loss over all steps):", ""]
    lines += ["| problems | " + " | ".join(RULES) + " |", "|---" * (len(RULES) + 1) + "|"]
    for row in rows:
        res = row["results"]
        lines.append(
            f"| {row['row']} | "
            + " | ".join(f"{res[n]['auc']:.4g} ± {res[n]['auc_ci95']:.2g}" for n in RULES)
            + " |"
        )
    lines += ["", "Meta-training:", ""]
    for recipe, s in summaries.items():
        lines.append(
            f"- `{recipe}`: {s['iterations']} iterations, {s['train_seconds'] / 60:.1f} min "
            f"(stopped by {s['stopped_by']})"
        )
    lines += ["", hardware_line(hw), "", "![loss curves](learned_optimizers.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/l2o"))
    parser.add_argument("--rows", default="all", help="comma-separated row indices, or all")
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    from metakit.l2o.evaluate import evaluate_run

    chosen = ROWS if args.rows == "all" else [ROWS[int(i)] for i in args.rows.split(",")]
    summaries = {
        recipe: trained(recipe, args.out) for recipe in dict.fromkeys(r[1] for r in chosen)
    }
    rows = []
    for name, recipe, problem, steps in chosen:
        tic = time.perf_counter()
        result = evaluate_run(
            args.out / recipe, problems=args.problems, steps=steps, problem=problem
        )
        result.update(row=name, recipe=recipe, eval_seconds=round(time.perf_counter() - tic, 1))
        rows.append(result)
        print(json.dumps({"row": name, **{k: result["results"][k]["final_loss"] for k in RULES}}))
        # written after every row, so an interrupted run keeps the rows it finished
        hw = hardware()
        results = {"rows": rows, "training": summaries, "hardware": hw, "date": time.strftime("%F")}
        write_results(args.results / "learned_optimizers", results, table(rows, summaries, hw))
        plot(rows, args.results / "learned_optimizers.png")


if __name__ == "__main__":
    main()
