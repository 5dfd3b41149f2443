"""Searching expressions with the controller: update rules (`target: optimizer`, Bello et al.
2017) and activation functions (`target: activation`, Ramachandran et al. 2017).

Each iteration samples `batch` designs from the policy. A design is compiled and checked on probe
inputs: an invalid one (not finite, wrong shape, constant) is rewarded 0 and its reason kept in
the history; a valid one is rewarded by a short training of a child network. The controller then
takes one REINFORCE step on the batch (random search: none). Rewards are cached by design, and a
child's training is seeded by the run's seed only, so a design scores the same every time it is
drawn and a resumed search ends exactly as an uninterrupted one. `result.json` holds the top
designs, each written as a formula.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from metakit import __version__
from metakit.config import _build, apply_overrides, read_yaml
from metakit.engine.checkpoint import load_state, save_state
from metakit.engine.trainer import check_run_dir
from metakit.errors import ConfigError
from metakit.search.child import ImageData, load_image_data
from metakit.search.controller import Controller, RandomPolicy, Reinforce
from metakit.search.grammar import Expression, Grammar, activation_grammar, optimizer_grammar
from metakit.search.optimizer import ChildTask
from metakit.search.report import best_designs
from metakit.search.run import search_logs, write_json

KIND = "search-expression"
# activation: one group b(u1(x), u2(x)), as the paper's best functions (Swish among them); the
# 6,250 designs are few enough for a search of a few hundred evaluations to map
DEFAULT_DEPTH = {"optimizer": 3, "activation": 1}
# steps of the child training that rewards a design. The optimizer child is short: at 200 steps
# most sensible rules reach the same plateau of the 2,000-image task (rewards within ~1 point),
# so speed, the thing a better rule buys, no longer shows in the reward.
CHILD_STEPS = {"optimizer": 50, "activation": 200}
# validation images per reward: the activation child's rewards sit closer together (most usable
# shapes within a few points), so its ranking needs the smaller sampling error of more images
CHILD_VAL = {"optimizer": 1000, "activation": 2000}


@dataclass
class ExpressionSearchConfig:
    kind: str = KIND
    target: str = "optimizer"  # or "activation"
    seed: int = 0
    policy: str = "controller"  # or "random"
    budget: float = 30.0  # minutes; 0 = `iterations` decide alone
    iterations: int = 10000
    batch: int = 8  # designs per controller step
    depth: int = 0  # groups b(u1(.), u2(.)) in an expression; 0: optimizer 3, activation 2
    dataset: str = "fashion-mnist"
    val_images: int = 5000
    child_train: int = 2000  # training images of the child task
    child_val: int = 0  # validation images that give the reward; 0: the target's CHILD_VAL
    child_steps: int = 0  # 0: the target's CHILD_STEPS
    lrs: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0])  # optimizer
    controller: dict[str, Any] = field(
        default_factory=lambda: {"hidden": 64, "temperature": 1.0, "tanh_constant": 2.5}
    )
    controller_lr: float = 5e-3
    entropy_weight: float = 1e-3
    baseline_decay: float = 0.9
    top: int = 10
    metakit_version: str = ""

    def validate(self) -> ExpressionSearchConfig:
        if self.target not in DEFAULT_DEPTH:
            raise ConfigError(f"target must be optimizer or activation, got {self.target!r}")
        if self.policy not in ("controller", "random"):
            raise ConfigError(f"policy must be controller or random, got {self.policy!r}")
        if min(self.iterations, self.batch, self.child_train) < 1:
            raise ConfigError("iterations, batch and child_train must be >= 1")
        if self.child_val < 0 or self.child_val >= self.val_images:
            raise ConfigError(
                f"child_val must lie in 0..{self.val_images - 1} (0: the target's default)"
            )
        if self.child_steps < 0 or self.budget < 0 or not self.lrs or min(self.lrs) <= 0:
            raise ConfigError("child_steps >= 0, budget >= 0 and positive lrs are required")
        self.grammar()  # checks depth
        return self

    @property
    def steps(self) -> int:
        """Child training steps per reward."""
        return self.child_steps or CHILD_STEPS[self.target]

    @property
    def val(self) -> int:
        """Validation images per reward (the default capped at the validation split)."""
        return self.child_val or min(CHILD_VAL[self.target], self.val_images)

    def grammar(self) -> Grammar:
        depth = self.depth or DEFAULT_DEPTH[self.target]
        return optimizer_grammar(depth) if self.target == "optimizer" else activation_grammar(depth)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_expression_config(
    target: str, path: Path | None = None, overrides: list[str] | None = None
) -> ExpressionSearchConfig:
    d = {
        **ExpressionSearchConfig(target=target).to_dict(),
        **(read_yaml(path) if path is not None else {}),
    }
    if d["kind"] != KIND or d["target"] != target:
        raise ConfigError(f"{path} is not a {target} search config")
    return _build(ExpressionSearchConfig, apply_overrides(d, overrides or []), "search").validate()


class Evaluator:
    """Checks a design and rewards it with the target's child training."""

    def __init__(self, config: ExpressionSearchConfig, task: ChildTask) -> None:
        self.config, self.task = config, task
        if config.target == "optimizer":
            from metakit.search.optimizer import probes

            self.probes = probes()
            self.shape = torch.Size([64])
        else:
            from metakit.search.activation import probes

            self.probes = probes()
            self.shape = torch.Size([121])

    def __call__(self, expression: Expression) -> dict[str, Any]:
        reason = expression.check(self.probes, self.shape)
        if reason is not None:
            return {"reward": 0.0, "invalid": reason}
        c = self.config
        if c.target == "optimizer":
            from metakit.search.optimizer import optimizer_reward

            reward, lr = optimizer_reward(expression, self.task, c.lrs, c.steps, c.seed)
            return {"reward": reward, "lr": lr}
        from metakit.search.activation import activation_reward

        return {"reward": activation_reward(expression, self.task, c.steps, c.seed)}


def top_designs(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The `n` best valid designs, one per formula, without the log's bookkeeping keys."""
    return [
        {k: v for k, v in r.items() if k not in ("split", "cached")} for r in best_designs(rows, n)
    ]


def search_expressions(
    config: ExpressionSearchConfig,
    out: Path,
    resume: bool = False,
    progress: bool = True,
    data: ImageData | None = None,
) -> dict[str, Any]:
    """Run (or resume) an expression search into `out`; returns what `result.json` holds."""
    config.validate()
    out = Path(out)
    last = check_run_dir(out, resume)
    data = data or load_image_data(config.dataset, config.val_images, config.seed)
    task = ChildTask.from_data(data, config.child_train, config.val)
    grammar = config.grammar()
    space = grammar.space()
    torch.manual_seed(config.seed)
    controller = Controller(space, **config.controller)
    reinforce = Reinforce(
        controller, config.controller_lr, config.baseline_decay, config.entropy_weight
    )
    policy = controller if config.policy == "controller" else RandomPolicy(space)
    gen = torch.Generator().manual_seed(config.seed)
    modules, optimizers, generators = (
        {"controller": controller}, {"controller": reinforce.optimizer}, {"sample": gen}
    )  # fmt: skip
    it, seconds = 0, 0.0
    cache: dict[tuple[int, ...], dict[str, Any]] = {}
    if resume:
        meta = load_state(last, modules, optimizers, generators)
        it, seconds, reinforce.baseline = meta["iteration"], meta["seconds"], meta["baseline"]
    config.metakit_version = __version__
    # the run's config.yaml names the defaults it ran with, so a later change of default cannot
    # change what --resume or a report reads
    config.depth, config.child_steps, config.child_val = grammar.depth, config.steps, config.val
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    evaluate = Evaluator(config, task)
    budget = config.budget * 60 if config.budget > 0 else math.inf
    with search_logs(out, it) as (metrics, history, interrupt):
        if resume:  # the rewards already paid for (rows up to the checkpoint were kept)
            for row in (json.loads(x) for x in history.path.read_text().splitlines() if x):
                cache[tuple(row["tokens"])] = {
                    k: row[k] for k in ("reward", "lr", "invalid") if k in row
                }
        bar = tqdm(
            total=config.iterations, initial=it, disable=not progress, unit="it",
            desc=f"{config.target} search ({config.policy})",
        )  # fmt: skip
        while it < config.iterations and seconds < budget:
            tic = time.perf_counter()
            sample = policy.sample(config.batch, gen)
            rewards, rows = [], []
            for tokens in sample.designs():
                key = tuple(tokens)
                hit = key in cache
                expression = grammar.expression(tokens)
                if not hit:
                    cache[key] = evaluate(expression)
                rows.append(
                    {"design": expression.formula(), "tokens": tokens, **cache[key], "cached": hit}
                )
                rewards.append(cache[key]["reward"])
            row: dict[str, Any] = {
                "reward": sum(rewards) / len(rewards),
                "best_reward": max(rewards),
                "invalid": sum("invalid" in r for r in rows) / len(rows),
            }
            if config.policy == "controller":
                row["entropy"] = float(sample.entropy.detach().mean())
                row.update(reinforce.step(sample, torch.tensor(rewards)))
            it += 1
            seconds += time.perf_counter() - tic
            row["seconds"] = seconds
            for r in rows:
                history.log(it, "search", r)
            metrics.log(it, "search", row)
            save_state(last, modules, optimizers, generators, {
                "kind": KIND, "iteration": it, "seconds": seconds, "baseline": reinforce.baseline,
            })  # fmt: skip
            bar.update(1)
            bar.set_postfix({k: f"{row[k]:.3f}" for k in ("reward", "entropy") if k in row})
            if interrupt["stop"]:
                bar.close()
                raise KeyboardInterrupt(
                    f"interrupted at iteration {it}; checkpoint saved, continue with --resume"
                )
        bar.close()
    rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines() if x]
    result = {
        "kind": KIND,
        "target": config.target,
        "policy": config.policy,
        "seed": config.seed,
        "iterations": it,
        "evaluations": len(rows),
        "distinct_designs": len({tuple(r["tokens"]) for r in rows}),
        "invalid_share": sum("invalid" in r for r in rows) / max(1, len(rows)),
        "search_seconds": round(seconds, 1),
        "top": top_designs(rows, config.top),
    }
    if config.target == "activation":  # is Swish, or a close relative, among the top?
        from metakit.search.activation import mark_swish_distance

        mark_swish_distance(grammar, result["top"])
    write_json(out / "result.json", result)
    return result
