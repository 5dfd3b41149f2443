"""Optimizer search (Bello et al. 2017) and activation search (Ramachandran et al. 2017) on
Fashion-MNIST, and the shipped results: PowerSign / AddSign and Swish against the usual choices.

Protocol. Child task: a Fashion-MNIST subset (2,000 training images; rewards on 1,000 images of a
seeded 5,000-image validation split cut from the training set), the test split never seen by a
search. Optimizer child: MLP 784-32-10 (ReLU), 50 steps of 128, the best of the rates
1e-3, 1e-2, 1e-1, 1 (at 200 steps most sensible rules reach the same ~80% plateau). Activation
child: three stride-2 3x3 convolutions (16, 32, 32 channels), each with batch norm and the
activation (own learnable beta), global average pooling and a linear layer; Adam 3e-3, 200 steps;
rewards on 2,000 validation images; expressions of depth 1 (6,250 designs). Controller and random
search run the same number of iterations of 8 designs (equal evaluations) per seed; each reports
its best design's reward, and the mean over seeds with a t-based 95% CI.

Parts:
  search-optimizer / search-activation: controller vs random, top designs as formulas
  sign: PowerSign, AddSign, SGD with momentum and Adam, each at its rate tuned on the
        validation images (the same grid for every rule: 1e-4, 3e-4, ..., 1 on the child MLP,
        `child`; 1e-4, 1e-3, ..., 1 on the held-out task, Conv-4 with 16 channels, 500 steps on
        10,000 images, `heldout`), scored on the test split, over seeds
  swish: Swish vs ReLU, GELU, ELU in the activation child (1,000 steps, 10,000 training images),
        test accuracy over seeds
  search-activation also reports whether an x * sigmoid(b x)-like function is in each top 10

    python benchmarks/search_rules.py --part sign,swish --seeds 0,1,2,3,4
    python benchmarks/search_rules.py --part search-optimizer --seeds 0,1,2 --iterations 100
    python benchmarks/search_rules.py --part sign --sign-tasks child   # rerun one task of a part
    python benchmarks/search_rules.py --part sign --sign-tasks child --child-steps 200 --seeds 0,...
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from common import hardware, hardware_line, metakit, seed_mean_ci, write_results
from metakit.search.expression_search import CHILD_STEPS

FINE = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]  # the cheap child task
COARSE = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]  # the held-out task (20x the cost per training)


def is_sign_family(formula: str) -> bool:
    return "sign(g)" in formula and "sign(m̂)" in formula


def sign_rule_rewards(run_dir: Path) -> dict[str, float]:
    """PowerSign's and AddSign's rewards under a finished search's own child task and seed."""
    from metakit.search.child import load_image_data
    from metakit.search.expression_search import Evaluator, load_expression_config
    from metakit.search.optimizer import SIGN_RULES, ChildTask

    config = load_expression_config("optimizer", run_dir / "config.yaml")
    data = load_image_data(config.dataset, config.val_images, config.seed)
    evaluate = Evaluator(config, ChildTask.from_data(data, config.child_train, config.val))
    grammar = config.grammar()
    return {
        f"{name}_reward": evaluate(grammar.expression(grammar.tokens(*groups)))["reward"]
        for name, groups in SIGN_RULES.items()
    }


# -- searches --------------------------------------------------------------------------------
def search_part(target: str, args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for seed in args.seeds:
        sign_rewards: dict[str, float] = {}  # one child task per seed, whichever the policy
        for policy in ("controller", "random"):
            run_dir = args.out / f"{target}-{policy}-seed{seed}"
            if (run_dir / "result.json").exists():
                result = json.loads((run_dir / "result.json").read_text())
            else:
                resume = (run_dir / "checkpoints" / "last.safetensors").exists()
                result = metakit(
                    "search", target, "--out", str(run_dir), "--seed", str(seed),
                    "--policy", policy, "--no-progress",
                    *(["--resume"] if resume else [
                        "--budget", "0", "--set", f"iterations={args.iterations}"
                    ]),
                )  # fmt: skip
            top = result["top"]
            row = {
                "policy": policy,
                "seed": seed,
                "best_reward": top[0]["reward"] if top else 0.0,
                "top5_mean_reward": statistics.mean(t["reward"] for t in top[:5]) if top else 0.0,
                "evaluations": result["evaluations"],
                "distinct_designs": result["distinct_designs"],
                "invalid_share": result["invalid_share"],
                "search_seconds": result["search_seconds"],
                "top": top[:10],
            }
            if target == "optimizer":
                row["sign_family_in_top5"] = any(is_sign_family(t["design"]) for t in top[:5])
                sign_rewards = sign_rewards or sign_rule_rewards(run_dir)
                row.update(sign_rewards)
                best_sign = max(sign_rewards.values())
                row["top5_better_than_both_sign_rules"] = sum(
                    t["reward"] > best_sign for t in top[:5]
                )
            else:
                from metakit.search.activation import SWISH_LIKE, mark_swish_distance
                from metakit.search.expression_search import load_expression_config

                grammar = load_expression_config("activation", run_dir / "config.yaml").grammar()
                mark_swish_distance(grammar, row["top"])  # runs older than the field lack it
                distances = [t["swish_distance"] for t in row["top"]]
                row["swish_distance_top10"] = min(
                    (d for d in distances if d is not None), default=float("inf")
                )
                row["swish_like_in_top10"] = row["swish_distance_top10"] < SWISH_LIKE
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "top"}), flush=True)
    summary = {}
    for policy in ("controller", "random"):
        for key in ("best_reward", "top5_mean_reward"):
            summary[f"{policy} {key}"] = seed_mean_ci(
                [r[key] for r in rows if r["policy"] == policy]
            )
    by = {(r["policy"], r["seed"]): r for r in rows}
    for key in ("best_reward", "top5_mean_reward"):
        summary[f"controller - random {key} (paired)"] = seed_mean_ci(
            [by["controller", s][key] - by["random", s][key] for s in args.seeds]
        )
    return {"rows": rows, "summary": summary}


# -- PowerSign / AddSign vs momentum and Adam -------------------------------------------------
def fit_and_score(
    model: torch.nn.Module, rule: Any, data: Any, n_train: int, steps: int, batch: int, seed: int
) -> tuple[float, float]:
    """Validation and test accuracy after `steps` minibatches with `rule` (0, 0 if diverged)."""
    from metakit.functional.optim import RuleOptimizer

    opt = RuleOptimizer(model.parameters(), rule)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        idx = torch.randint(n_train, (batch,), generator=gen)
        loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
        if not torch.isfinite(loss):
            return 0.0, 0.0
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        val = float((model(data.val_x[:2000]).argmax(-1) == data.val_y[:2000]).float().mean())
        test = float((model(data.test_x).argmax(-1) == data.test_y).float().mean())
    return val, test


def sign_part(args: argparse.Namespace) -> dict[str, Any]:
    from metakit import create_backbone
    from metakit.functional.rules import adam, addsign, momentum, powersign
    from metakit.search.child import load_image_data

    rules = {"powersign": powersign, "addsign": addsign, "momentum": momentum, "adam": adam}
    data = load_image_data()

    def child(seed: int) -> torch.nn.Module:  # the optimizer search's child network
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
        )

    def heldout(seed: int) -> torch.nn.Module:  # another architecture, more data and steps
        torch.manual_seed(seed)
        return create_backbone("conv4", hidden=16, num_classes=10)

    tasks = {
        "child": (child, 2000, args.child_steps, 128, FINE),
        "heldout": (heldout, 10000, 500, 64, COARSE),
    }
    # the tasks (at their step counts) not rerun keep their rows from the results file
    rerun = {(t, tasks[t][2]) for t in args.sign_tasks}
    rows = [r for r in args.previous.get("rows", []) if (r["task"], r["steps"]) not in rerun]
    for task in args.sign_tasks:
        build, n_train, steps, batch, grid = tasks[task]
        for seed in args.seeds:
            for name, make in rules.items():
                scores = [
                    (*fit_and_score(build(seed), make(lr), data, n_train, steps, batch, seed), lr)
                    for lr in grid
                ]
                val, test, lr = max(scores, key=lambda v: v[0])
                rows.append({
                    "task": task, "rule": name, "seed": seed, "steps": steps, "val": val, "lr": lr,
                    "test": test,
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for task, steps in sorted(dict.fromkeys((r["task"], r["steps"]) for r in rows)):
        pick = {
            (r["rule"], r["seed"]): r["test"]
            for r in rows
            if (r["task"], r["steps"]) == (task, steps)
        }
        seeds = sorted({s for _, s in pick})
        label = f"{task} {steps} steps"
        for name in rules:
            summary[f"{label} {name} test accuracy"] = seed_mean_ci([pick[name, s] for s in seeds])
        summary[f"{label} powersign - momentum (paired)"] = seed_mean_ci(
            [pick["powersign", s] - pick["momentum", s] for s in seeds]
        )
    return {"rows": rows, "summary": summary}


def swish_part(args: argparse.Namespace) -> dict[str, Any]:
    from metakit.search.activation import named_activation, train_child
    from metakit.search.child import load_image_data
    from metakit.search.optimizer import ChildTask

    data = load_image_data()
    task = ChildTask.from_data(data, 10000, 5000)
    test_task = ChildTask(
        task.train_x, task.train_y, data.test_x.flatten(1), data.test_y, 10, task.image_shape
    )
    rows = []
    for seed in args.seeds:
        for name in ("swish", "relu", "gelu", "elu"):
            acc = train_child(named_activation(name), test_task, steps=1000, seed=seed)
            rows.append({"activation": name, "seed": seed, "test": acc})
            print(json.dumps(rows[-1]), flush=True)
    summary = {
        f"{a} test accuracy": seed_mean_ci([r["test"] for r in rows if r["activation"] == a])
        for a in ("swish", "relu", "gelu", "elu")
    }
    pick = {(r["activation"], r["seed"]): r["test"] for r in rows}
    summary["swish - relu (paired)"] = seed_mean_ci(
        [pick["swish", s] - pick["relu", s] for s in args.seeds]
    )
    return {"rows": rows, "summary": summary}


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Optimizer and activation search (Fashion-MNIST child tasks)", ""]
    for part, res in results.items():
        if part == "hardware":
            continue
        lines += [f"## {part}", ""]
        for key, s in res["summary"].items():
            ci = f" ± {100 * s['ci95']:.2f}" if s["ci95"] is not None else ""
            lines.append(f"- {key}: {100 * s['mean']:.2f}{ci} (n = {s['n']})")
        for row in res["rows"]:
            if "top" in row:
                refs = ""
                if "powersign_reward" in row:
                    refs = (
                        f" (under the same reward: PowerSign {100 * row['powersign_reward']:.2f}, "
                        f"AddSign {100 * row['addsign_reward']:.2f})"
                    )
                lines += ["", f"Top designs, {row['policy']} seed {row['seed']}{refs}:", ""]
                lines += [
                    f"{i}. `{t['design']}` ({100 * t['reward']:.2f}"
                    + (
                        f"; Swish distance {t['swish_distance']:.3f})"
                        if t.get("swish_distance") is not None
                        else ")"
                    )
                    for i, t in enumerate(row["top"][:10], 1)
                ]
        lines.append("")
    lines += [hardware_line(results["hardware"]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="sign,swish")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument(
        "--sign-tasks", default="child,heldout", help="the sign part's tasks to (re)run"
    )
    parser.add_argument(
        "--child-steps", type=int, default=CHILD_STEPS["optimizer"],
        help="steps of the sign part's child task (the optimizer search's child)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("runs/search_rules"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/search_rules"))
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    path = args.results.with_suffix(".json")
    results = json.loads(path.read_text()) if path.exists() else {}
    args.sign_tasks = args.sign_tasks.split(",")
    args.previous = results.get("sign", {})
    results["hardware"] = hardware()
    parts = {
        "search-optimizer": lambda: search_part("optimizer", args),
        "search-activation": lambda: search_part("activation", args),
        "sign": lambda: sign_part(args),
        "swish": lambda: swish_part(args),
    }
    for part in args.part.split(","):
        start = time.perf_counter()
        results[part] = parts[part]()
        results[part]["seconds"] = round(time.perf_counter() - start, 1)
        write_results(args.results, results, markdown(results))
    print(json.dumps({p: r["summary"] for p, r in results.items() if p != "hardware"}, indent=2))


if __name__ == "__main__":
    main()
