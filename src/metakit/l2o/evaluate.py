"""Run an update rule on a batch of problems, tune baselines' rates on a log grid, compare.

`run_rule` steps B problems at once with any `UpdateRule` and returns the loss curve `[steps+1,
B]`. The rates of the hand-written baselines are tuned on problems of their own stream (never on
the held-out ones); the learned optimizer has no rate to tune.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from metakit.data.sampler import episode_generator
from metakit.engine.evaluate import mean_ci95
from metakit.functional.rules import UpdateRule, make_rule
from metakit.l2o.problems import ProblemBatch, ProblemFamily

BASELINES = ("sgd", "momentum", "nesterov", "rmsprop", "adam")
DEFAULT_GRID = tuple(10.0 ** (e / 2) for e in range(-8, 3))  # 1e-4 .. 10, half decades


def run_rule(rule: UpdateRule, problems: ProblemBatch, steps: int) -> torch.Tensor:
    """Loss curves `[steps + 1, B]` of `steps` steps of `rule` (no graph is kept)."""
    params = {k: p.detach() for k, p in problems.params.items()}
    state = rule.init(params)
    curve = []
    for t in range(steps + 1):
        live = {k: p.requires_grad_() for k, p in params.items()}
        with torch.enable_grad():
            loss = problems.loss(live, t)
            grads = torch.autograd.grad(loss.sum(), list(live.values()))
        curve.append(loss.detach())
        if t == steps:
            break
        with torch.no_grad():
            updates, state = rule.update(dict(zip(live, grads, strict=True)), state, params)
            params = {k: (p + updates[k]).detach() for k, p in params.items()}
            state = _detach(state)
    return torch.stack(curve)


def _detach(state: Any) -> Any:
    from torch.utils._pytree import tree_map

    return tree_map(lambda v: v.detach() if torch.is_tensor(v) else v, state)


def draw(family: ProblemFamily, count: int, steps: int, seed: int, stream: str) -> ProblemBatch:
    return family.sample(count, steps, episode_generator(seed, 0, stream))


def finite_mean(values: torch.Tensor) -> float:
    """The mean, or +inf where any run diverged (a diverged rate never wins the tuning)."""
    return float(values.mean()) if bool(torch.isfinite(values).all()) else math.inf


def tune_rate(
    name: str,
    problems: ProblemBatch,
    steps: int,
    grid: Sequence[float] = DEFAULT_GRID,
) -> tuple[float, dict[float, float]]:
    """The grid rate with the lowest mean final loss of baseline `name` on `problems`."""
    scores = {lr: finite_mean(run_rule(make_rule(name, lr), problems, steps)[-1]) for lr in grid}
    best = min(scores, key=lambda lr: scores[lr])
    if not math.isfinite(scores[best]):
        raise ValueError(f"{name} diverged at every rate of the grid {list(grid)}")
    return best, scores


def curve_summary(curve: torch.Tensor) -> dict[str, Any]:
    """Final loss and area under the curve (mean loss over the steps), each with a 95% CI
    over problems, and the mean curve with its CI band."""
    final, final_ci = mean_ci95(curve[-1])
    area, area_ci = mean_ci95(curve.mean(0))
    per_step = [mean_ci95(row) for row in curve]
    return {
        "final_loss": final,
        "final_ci95": final_ci,
        "auc": area,
        "auc_ci95": area_ci,
        "problems": curve.shape[1],
        "final_losses": [round(float(v), 8) for v in curve[-1]],  # per problem, for pairing
        "curve": [round(m, 6) for m, _ in per_step],
        "curve_ci95": [round(c, 6) for _, c in per_step],
    }


def compare(
    rules: dict[str, UpdateRule | Callable[[], UpdateRule]],
    problems: ProblemBatch,
    steps: int,
) -> dict[str, dict[str, Any]]:
    """Each rule run on the same held-out problems, summarised."""
    out = {}
    for name, rule in rules.items():
        rule = rule if isinstance(rule, UpdateRule) else rule()
        out[name] = curve_summary(run_rule(rule, problems, steps))
    return out


def evaluate_run(
    run_dir: Any,
    which: str = "best",
    problems: int | None = None,
    steps: int | None = None,
    seed: int | None = None,
    problem: dict[str, Any] | None = None,
    baselines: Sequence[str] = BASELINES,
    grid: Sequence[float] = DEFAULT_GRID,
) -> dict[str, Any]:
    """A trained learned optimizer against the baselines, each at its rate tuned on separate
    problems, on held-out problems (`problem` overrides the family's options, e.g. `{"hidden":
    [40]}` for the paper's generalisation rows; `steps` defaults to the recipe's)."""
    from metakit.l2o.problems import make_family
    from metakit.l2o.train import load_trained

    net, config = load_trained(run_dir, which)
    net.eval().requires_grad_(False)
    e = config.eval
    spec = {**config.problem, **(problem or {})}
    steps = steps or e.steps
    count = problems or e.problems
    seed = e.seed if seed is None else seed
    tune = draw(make_family(spec, "train"), e.tune_problems, steps, seed, "l2o-tune")
    test = draw(make_family(spec, "heldout"), count, steps, seed, "l2o-test")
    rules: dict[str, UpdateRule | Callable[[], UpdateRule]] = {"learned": net.rule()}
    rates = {}
    for name in baselines:
        rates[name], _ = tune_rate(name, tune, steps, grid)
        rules[name] = make_rule(name, rates[name])
    results = compare(rules, test, steps)
    for name, lr in rates.items():
        results[name]["lr"] = lr
    return {
        "problem": spec,
        "steps": steps,
        "problems": count,
        "tune_problems": e.tune_problems,
        "seed": seed,
        "checkpoint": which,
        "results": results,
    }
