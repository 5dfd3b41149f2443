"""Meta-training of the learned LSTM optimizer (Andrychowicz et al. 2016), top to bottom.

Each iteration draws a batch of optimizee problems (from `(seed, iteration)`, so a resumed run
draws the same ones) and optimizes them for `horizon` steps with the LSTM rule, in truncations
of `unroll` steps. Within a truncation the meta-loss is the sum of the optimizee losses after
each update; its gradient flows back through the parameter trajectory into the LSTM, while the
optimizee's gradients enter as constants (the paper drops second derivatives). After each
truncation the LSTM takes one Adam step, and the trajectory and LSTM state are detached.
The best checkpoint is chosen on validation problems (their own stream), never on the held-out
evaluation problems.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from metakit import __version__
from metakit.config import _build, apply_overrides, read_yaml
from metakit.engine.checkpoint import load_checkpoint, save_checkpoint
from metakit.engine.trainer import check_run_dir, stop_on_interrupt
from metakit.errors import ConfigError, TrainingError
from metakit.functional.learned import LSTMOptimizer
from metakit.l2o.evaluate import draw, run_rule
from metakit.l2o.problems import ProblemBatch, make_family
from metakit.tracking.logger import RunLogger

KIND = "l2o"


@dataclass
class L2OTrainConfig:
    iterations: int = 1000  # problem batches; each is `horizon / unroll` Adam steps
    problems: int = 16  # optimizees per batch (stepped together)
    horizon: int = 100
    unroll: int = 20
    lr: float = 1e-3
    # the meta-learning rate over `iterations`: constant, or cosine-decayed to `lr_min` (a late,
    # small rate keeps what was learned early instead of drifting away from it)
    lr_schedule: str = "constant"
    lr_min: float = 0.0
    grad_clip: float = 1.0
    # wall-time budget of meta-training, validation included (the figure a user waits for);
    # 0 = none
    minutes: float = 0.0
    val_every: int = 50
    val_problems: int = 64
    # model selection on the validation problems: the mean final loss (the figure the benchmark
    # reports; dominated by the hardest problems) or the mean log final loss (every problem
    # weighs the same)
    val_metric: str = "final_loss"
    # the meta-objective over each truncation: the mean optimizee loss (the paper's) or the mean
    # log loss (weighs late, small losses as much as early ones)
    meta_loss: str = "loss"
    log_every: int = 10
    # torch.compile the LSTM step (fuses its elementwise ops; pays a one-off compile)
    compile: bool = False


@dataclass
class L2OEvalConfig:
    problems: int = 100  # held-out problems for `metakit eval` / the benchmark
    steps: int = 100
    tune_problems: int = 32  # the baselines' rates are tuned on these (their own stream)
    seed: int = 0


@dataclass
class L2OConfig:
    kind: str = KIND
    name: str = "custom"
    description: str = ""
    seed: int = 0
    metakit_version: str = ""
    problem: dict[str, Any] = field(default_factory=lambda: {"name": "quadratic", "dim": 10})
    optimizer: dict[str, Any] = field(default_factory=dict)  # LSTMOptimizer options
    train: L2OTrainConfig = field(default_factory=L2OTrainConfig)
    eval: L2OEvalConfig = field(default_factory=L2OEvalConfig)

    def validate(self) -> L2OConfig:
        t = self.train
        if min(t.iterations, t.problems, t.horizon, t.unroll, t.val_every, t.log_every) < 1:
            raise ConfigError("l2o train iterations/problems/horizon/unroll/val_every must be >= 1")
        if t.horizon % t.unroll:
            raise ConfigError(
                f"train.horizon ({t.horizon}) must be a multiple of train.unroll ({t.unroll})"
            )
        if t.lr <= 0 or t.minutes < 0 or t.grad_clip < 0:
            raise ConfigError("train.lr must be positive, train.minutes and grad_clip >= 0")
        if t.lr_schedule not in ("constant", "cosine") or not 0 <= t.lr_min <= t.lr:
            raise ConfigError(
                f"train.lr_schedule must be constant or cosine (got {t.lr_schedule!r}) and "
                f"train.lr_min must lie in [0, train.lr] (got {t.lr_min:g})"
            )
        if t.val_metric not in ("final_loss", "log_final_loss"):
            raise ConfigError(
                f"train.val_metric must be final_loss or log_final_loss, got {t.val_metric!r}"
            )
        if t.meta_loss not in ("loss", "log_loss"):
            raise ConfigError(f"train.meta_loss must be loss or log_loss, got {t.meta_loss!r}")
        if "name" not in self.problem:
            raise ConfigError("the problem section needs a 'name' (quadratic or mlp)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_l2o(d: dict[str, Any]) -> bool:
    return d.get("kind") == KIND


def load_l2o_config(path: Path, overrides: list[str] | None = None) -> L2OConfig:
    d = read_yaml(path)
    d.setdefault("name", path.stem)
    return _build(L2OConfig, apply_overrides(d, overrides or []), "config").validate()


def build_optimizer_net(config: L2OConfig) -> LSTMOptimizer:
    try:
        return LSTMOptimizer(**config.optimizer)
    except TypeError as e:
        raise ConfigError(
            f"optimizer section: {e}; options: hidden, layers, preprocess, output_scale"
        ) from None


def truncated_meta_loss(
    net: LSTMOptimizer,
    problems: ProblemBatch,
    params: dict,
    state: Any,
    start: int,
    length: int,
    log: bool = False,
) -> tuple[torch.Tensor, dict, Any]:
    """Mean over `length` updates (and over the problems) of the optimizee loss after each, or
    of its log (`log=True`: each step weighs by its relative progress, so the late steps, whose
    losses are small, are not drowned by the early ones); returns it with the end parameters
    and LSTM state (still attached to the graph)."""
    rule = net.rule()
    total = None
    for t in range(start, start + length + 1):
        losses = problems.loss(params, t)  # [B]
        if t > start:
            term = (losses.clamp_min(1e-12).log() if log else losses).mean()
            total = term if total is None else total + term
        if t == start + length:
            break
        # each problem's own gradient, as a constant input: no second derivatives (the paper's
        # choice)
        grads = torch.autograd.grad(losses.sum(), list(params.values()), retain_graph=True)
        updates, state = rule.update(dict(zip(params, grads, strict=True)), state, params)
        params = {k: p + updates[k] for k, p in params.items()}
    assert total is not None
    return total / length, params, state


def meta_lr(t: L2OTrainConfig, iteration: int) -> float:
    """The meta-learning rate of iteration `iteration` (0-based) under `t.lr_schedule`."""
    if t.lr_schedule == "constant":
        return t.lr
    done = min(iteration / t.iterations, 1.0)
    return t.lr_min + 0.5 * (t.lr - t.lr_min) * (1 + math.cos(math.pi * done))


def validate(net: LSTMOptimizer, config: L2OConfig, family: Any) -> float:
    """`train.val_metric` on the validation problems (lower is better; inf if any diverged)."""
    t = config.train
    problems = draw(family, t.val_problems, t.horizon, config.seed, "l2o-val")
    final = run_rule(net.rule(), problems, t.horizon)[-1]
    if not torch.isfinite(final).all():
        return math.inf
    if t.val_metric == "log_final_loss":
        return float(final.clamp_min(1e-12).log().mean())
    return float(final.mean())


def train_l2o(
    config: L2OConfig, out: Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Meta-train into run directory `out` (config.yaml, metrics.jsonl, checkpoints/)."""
    config.validate()
    t = config.train
    out = Path(out)
    last = check_run_dir(out, resume)
    torch.manual_seed(config.seed)
    family = make_family(config.problem, "train")
    net = build_optimizer_net(config)
    if t.compile:
        net.step = torch.compile(net.step)  # an instance attribute: the weights stay the module's
    opt = torch.optim.Adam(net.parameters(), t.lr)
    it, best, seconds = 0, math.inf, 0.0
    if resume:
        meta = load_checkpoint(last, net, opt, restore_rng=True)
        it, best, seconds = meta["step"], meta["best_metric"], meta.get("train_seconds", 0.0)
    config.metakit_version = __version__
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    base_meta = {
        "kind": KIND,
        "config": config.to_dict(),
        "metakit_version": __version__,
        "metric": f"val_{t.val_metric}",
    }

    budget = t.minutes * 60 if t.minutes > 0 else math.inf
    clock = time.perf_counter()

    def elapsed() -> float:
        """Seconds of meta-training so far, earlier runs of a resumed one included."""
        return seconds + time.perf_counter() - clock

    def checkpoint(name: str) -> None:
        meta = {**base_meta, "step": it, "best_metric": best, "train_seconds": elapsed()}
        save_checkpoint(out / "checkpoints" / f"{name}.safetensors", net, meta, opt)

    bar = tqdm(total=t.iterations, initial=it, disable=not progress, unit="it", desc=config.name)
    window: list[float] = []
    with RunLogger(out, start_step=it) as logger, stop_on_interrupt() as interrupt:
        while it < t.iterations and elapsed() < budget:
            problems = draw(family, t.problems, t.horizon, config.seed, f"l2o-train-{it}")
            for group in opt.param_groups:
                group["lr"] = meta_lr(t, it)
            params = {k: p.clone().requires_grad_() for k, p in problems.params.items()}
            state = net.rule().init(params)
            for start in range(0, t.horizon, t.unroll):
                loss, params, state = truncated_meta_loss(
                    net, problems, params, state, start, t.unroll, t.meta_loss == "log_loss"
                )
                if not math.isfinite(loss.item()):
                    raise TrainingError(
                        f"the meta-loss became {loss.item()} at iteration {it + 1}; stopping. "
                        f"Lower train.lr (now {t.lr:g}) or train.grad_clip, then resume from the "
                        "last checkpoint with --resume."
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip)
                opt.step()
                params = {k: p.detach().requires_grad_() for k, p in params.items()}
                state = {**state, "hc": state["hc"].detach()}
                window.append(loss.item())
            it += 1
            bar.update(1)
            done = it == t.iterations or elapsed() >= budget
            if it % t.log_every == 0 or done:
                row = {"meta_loss": sum(window) / len(window), "lr": meta_lr(t, it - 1)}
                logger.log(it, "train", row)
                bar.set_postfix(meta_loss=f"{row['meta_loss']:.4g}")
                window = []
            if it % t.val_every == 0 or done:
                score = validate(net, config, family)
                logger.log(it, "val", {t.val_metric: score})
                bar.write(f"iteration {it}: val {t.val_metric} {score:.4g}", file=sys.stderr)
                if score < best:
                    best = score
                    checkpoint("best")
                checkpoint("last")
            if interrupt["stop"]:
                checkpoint("last")
                bar.close()
                raise KeyboardInterrupt(
                    f"interrupted at iteration {it}; checkpoint saved, continue with --resume"
                )
        bar.close()
    return {
        "kind": KIND,
        "iterations": it,
        "stopped_by": "minutes" if it < t.iterations else "iterations",
        f"best_val_{t.val_metric}": best,
        "train_seconds": round(elapsed(), 2),
        "run_dir": str(out),
    }


def load_trained(run_dir: Path, which: str = "best") -> tuple[LSTMOptimizer, L2OConfig]:
    """The trained network of a run directory and its config."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a metakit run (no config.yaml); train one first")
    config = _build(L2OConfig, read_yaml(path), "config")
    net = build_optimizer_net(config)
    load_checkpoint(Path(run_dir) / "checkpoints" / f"{which}.safetensors", net)
    return net, config


def resume_l2o_config(run_dir: Path, overrides: list[str]) -> L2OConfig:
    return load_l2o_config(Path(run_dir) / "config.yaml", overrides)


__all__ = ["L2OConfig", "is_l2o", "load_l2o_config", "load_trained", "train_l2o"]
