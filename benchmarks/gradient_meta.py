"""Gradient-based meta-learning: sinusoid regression (Finn et al. 2017, Fig. 2/3 protocol) and
Omniglot 5-way 1-shot after a fixed training budget, for MAML, FOMAML, Meta-SGD, Reptile and
Meta-LSTM (also 5-shot).

Sinusoid protocol: A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5]; MLP 40-40 ReLU; K support
points; query MSE on 100 points per task, averaged over 1000 fixed test tasks (split `test`,
eval seed 0) with a 95% CI, after 1, 5 and 10 SGD steps. MAML: inner lr 0.01, one inner step in
training, meta-batch 25, Adam 1e-3. Pretrained baseline: the same MLP trained jointly on all
tasks, fine-tuned with SGD whose step size is chosen on 200 `val` tasks (as the paper tuned it).

Omniglot protocol: Vinyals split, 28x28, Conv-4, 5-way 1-shot, 15 queries per class, 1000 fixed
test episodes, the checkpoint the recipe's eval names (best on 200 val episodes); each recipe
trains for at most `--minutes` (default 60) of training time on this machine (`train.minutes`;
validation excluded) or its `train.episodes` meta-iterations, whichever comes first: a budget
far below the papers' ~2M tasks. The BatchNorm mode is stated per row. Rows accumulate across
invocations (a re-run recipe replaces its row). Usage:

    python benchmarks/gradient_meta.py [--part sinusoid|omniglot|all] [--sinusoid-episodes N]
        [--recipes maml-omniglot-5w1s,...] [--minutes 60] [--omniglot-tasks N]
        [--results benchmarks/results/gradient_meta_omniglot]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import hardware, hardware_line, metakit, write_results

PUBLISHED_SINUSOID = {  # Finn et al. 2017, 5-shot, MSE after 1 / 5 / 10 steps
    "maml-sinusoid-5shot": [0.67, 0.38, 0.35],
    "pretrained-sinusoid-5shot": [2.41, 2.23, 2.19],
}
OMNIGLOT = [
    "maml-omniglot-5w1s",
    "fomaml-omniglot-5w1s",
    "metasgd-omniglot-5w1s",
    "reptile-omniglot-5w1s",
    "metalstm-omniglot-5w1s",
    "metalstm-omniglot-5w5s",
]
PUBLISHED_OMNIGLOT = {  # 5-way 1-shot accuracy (%), full training in the papers
    "maml-omniglot-5w1s": 98.7,
    "fomaml-omniglot-5w1s": 98.3,
    "metasgd-omniglot-5w1s": 99.53,
    "reptile-omniglot-5w1s": 97.68,
    # Ravi & Larochelle report miniImageNet only; issue #24's targets for Omniglot instead
    "metalstm-omniglot-5w1s": "none (target 95)",
    "metalstm-omniglot-5w5s": "none (target 98.5, 5-shot)",
}
FINE_TUNE_RATES = [0.003, 0.01, 0.02, 0.05, 0.1]


def train(
    recipe: str, out: Path, episodes: int, extra: list[str] | None = None, minutes: float = 0.0
) -> dict:
    run_dir = out / recipe
    resume = (run_dir / "checkpoints" / "last.safetensors").exists()
    budget = [f"train.episodes={episodes}", f"train.minutes={minutes}"]
    args = ["train", recipe, "--out", str(run_dir), "--no-progress"]
    sets = budget if resume else [*budget, *(extra or [])]
    args += ["--resume"] if resume else []
    args += [x for s in sets for x in ("--set", s)]
    tic = time.perf_counter()
    summary = metakit(*args)
    summary["wall_seconds"] = round(time.perf_counter() - tic, 1)
    return summary


def tune_fine_tune_rate(run_dir: Path) -> tuple[float, dict[float, float]]:
    """The pretrained baseline's test-time SGD rate with the lowest val MSE after 10 steps."""
    from metakit.engine.build import build_dataset, load_run
    from metakit.engine.evaluate import evaluate_regression

    config, algorithm, _, _ = load_run(run_dir, "best")
    e = config.eval
    sampler = build_dataset(config).sampler("val", 1, e.shots, e.queries, seed=e.seed)
    scores = {}
    for lr in FINE_TUNE_RATES:
        algorithm.test_inner_lr = lr
        scores[lr] = evaluate_regression(algorithm, sampler, steps=[10], episodes=200).mse[0]
    finite = {lr: m for lr, m in scores.items() if m == m and m != float("inf")}  # drop NaN/inf
    return min(finite, key=finite.__getitem__), scores


def sinusoid_part(out: Path, episodes: int) -> list[dict]:
    rows = []
    for recipe in ["maml-sinusoid-5shot", "maml-sinusoid-10shot", "pretrained-sinusoid-5shot"]:
        summary = train(recipe, out, episodes)
        run_dir = out / recipe
        tuned = None
        if recipe.startswith("pretrained"):
            lr, scores = tune_fine_tune_rate(run_dir)
            tuned = {"test_inner_lr": lr, "val_mse_after_10": scores}
        result = metakit(
            "eval",
            str(run_dir),
            "--json",
            "--no-progress",
            "--adapt-steps",
            "1,5,10",
            *(["--set", f"algorithm.test_inner_lr={tuned['test_inner_lr']}"] if tuned else []),
        )
        rows.append(
            {
                "recipe": recipe,
                "steps": result["steps"],
                "mse": result["mse"],
                "ci95": result["ci95"],
                "published": PUBLISHED_SINUSOID.get(recipe),
                "protocol": {
                    k: result[k] for k in ("split", "shots", "queries", "episodes", "seed")
                },
                "tuned": tuned,
                "train": summary,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def omniglot_part(out: Path, recipes: list[str], tasks: int | None, minutes: float) -> list[dict]:
    from metakit.config import load_config

    rows = []
    for recipe in recipes:
        train_config = load_config(recipe).train
        episodes = (
            train_config.episodes if tasks is None else max(1, tasks // train_config.meta_batch)
        )
        summary = train(recipe, out, episodes, minutes=minutes)
        result = metakit("eval", str(out / recipe), "--json", "--no-progress")
        rows.append(
            {
                "recipe": recipe,
                "accuracy": result["accuracy"],
                "ci95": result["ci95"],
                "bn": result["bn"],
                "published": PUBLISHED_OMNIGLOT[recipe],
                "protocol": {
                    k: result[k] for k in ("split", "ways", "shots", "queries", "episodes", "seed")
                },
                "checkpoint": result.get("checkpoint", "best"),
                "cpu": hardware()["cpu"],
                "budget_minutes": minutes,
                "train_meta_iterations": summary["steps"],
                "train_tasks": summary["steps"] * train_config.meta_batch,
                "train": summary,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """Rows of an earlier invocation, with re-run recipes replaced, in recipe order."""
    by_recipe = {r["recipe"]: r for r in old} | {r["recipe"]: r for r in new}
    return list(by_recipe.values())


def markdown(results: dict) -> str:
    lines = ["# Gradient-based meta-learning", ""]
    if results.get("sinusoid"):
        lines += [
            "## Sinusoid regression (1000 test tasks, 100 query points each, MSE ± 95% CI)",
            "",
            "| recipe | 1 step | 5 steps | 10 steps | published (1/5/10) | train min |",
            "|---|---:|---:|---:|---|---:|",
        ]
        for r in results["sinusoid"]:
            cells = [f"{m:.3f} ± {c:.3f}" for m, c in zip(r["mse"], r["ci95"], strict=True)]
            pub = " / ".join(map(str, r["published"])) if r["published"] else "-"
            lines.append(
                f"| {r['recipe']} | {' | '.join(cells)} | {pub} | "
                f"{r['train']['train_seconds'] / 60:.1f} |"
            )
        lines.append("")
    if results.get("omniglot"):
        lines += [
            "## Omniglot 5-way 1-shot after a fixed budget (1000 test episodes, 15 queries)",
            "",
            "| recipe | meta-iterations | accuracy (%) | 95% CI | BatchNorm | published (full) "
            "| train min | tasks/s | peak RSS (MB) | CPU (2 cores) |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---|",
        ]
        for r in results["omniglot"]:
            t = r["train"]
            lines.append(
                f"| {r['recipe']} | {r['train_meta_iterations']} | {100 * r['accuracy']:.2f} | "
                f"±{100 * r['ci95']:.2f} | {r['bn']} | {r['published']} | "
                f"{t['train_seconds'] / 60:.1f} | {t['episodes_per_s']} | {t['peak_memory_mb']} | "
                f"{r.get('cpu', '-')} |"
            )
        lines.append("")
    lines.append("Last run: " + hardware_line(results["hardware"]))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--part", choices=["sinusoid", "omniglot", "all"], default="all")
    parser.add_argument("--sinusoid-episodes", type=int, default=40000)
    parser.add_argument(
        "--recipes",
        default=",".join(OMNIGLOT),
        help="comma-separated Omniglot recipes to train (rows of others are kept)",
    )
    parser.add_argument(
        "--omniglot-tasks",
        type=int,
        default=None,
        help="training budget in tasks (meta-iterations = tasks / the recipe's meta-batch; "
        "default: the recipe's train.episodes)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=60.0,
        help="training-time budget per Omniglot recipe (train.minutes; validation excluded)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench/gradient_meta"))
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="results file stem (default: benchmarks/results/gradient_meta_<part>, or "
        "gradient_meta for --part all), so rows accumulate in the committed tables",
    )
    args = parser.parse_args()
    if args.results is None:
        stem = "gradient_meta" if args.part == "all" else f"gradient_meta_{args.part}"
        args.results = Path("benchmarks/results") / stem
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = sorted(set(recipes) - set(OMNIGLOT))
    if unknown:
        parser.error(f"unknown recipes {unknown}; choose from {', '.join(OMNIGLOT)}")
    previous = args.results.with_suffix(".json")
    old = json.loads(previous.read_text()) if previous.exists() else {}
    results: dict = {"benchmark": "gradient_meta", "hardware": hardware()}
    results["sinusoid"] = old.get("sinusoid", [])
    if args.part in ("sinusoid", "all"):
        results["sinusoid"] = sinusoid_part(args.out, args.sinusoid_episodes)
    results["omniglot"] = old.get("omniglot", [])
    if args.part in ("omniglot", "all"):
        rows = omniglot_part(args.out, recipes, args.omniglot_tasks, args.minutes)
        results["omniglot"] = merge(results["omniglot"], rows)
    write_results(args.results, results, markdown(results))
    print(json.dumps({"written": str(args.results.with_suffix(".json"))}))


if __name__ == "__main__":
    main()
