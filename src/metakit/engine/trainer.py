"""The episodic training loop, readable top to bottom.

sample episodes → meta_loss → step → log → every `val_every` steps: validate, checkpoint;
until `train.episodes` steps or `train.minutes` of training time (a budget), whichever is first.
State that matters for an exact resume (weights, optimizer, step, best metric, RNG) lives in
`checkpoints/last.safetensors`; episodes depend only on `(seed, index)`, so a resumed run
sees exactly the episodes the uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metakit import __version__
from metakit.algorithms import ALGORITHMS, Algorithm
from metakit.config import Config, read_yaml, save_config
from metakit.data.batches import BatchSampler
from metakit.data.source import EpisodeSampler
from metakit.engine import distributed
from metakit.engine.build import build_algorithm, build_dataset, resolve_device
from metakit.engine.checkpoint import load_checkpoint, save_checkpoint
from metakit.engine.evaluate import EvalResult, RegressionResult, evaluate, evaluate_regression
from metakit.engine.memory import keep_freed_memory, peak_memory_mb
from metakit.errors import ConfigError, TrainingError
from metakit.tracking import RunLogger


class NullLogger:
    """What ranks other than 0 log to: nothing (rank 0 writes the run directory)."""

    def log(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        pass


# Keys that may change when a run is resumed; anything else would silently change the run.
RESUMABLE_KEYS = {("train", "episodes"), ("train", "minutes"), ("device",)}


def resume_config(run_dir: Path, overrides: list[str]) -> Config:
    """The config a run started with, plus overrides that are safe on resume (more steps)."""
    from metakit.config import apply_overrides

    path = run_dir / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir} has no config.yaml; it is not a metakit run to resume")
    saved = read_yaml(path)
    for item in overrides:
        key = tuple(item.split("=", 1)[0].strip().split("."))
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"cannot change {'.'.join(key)} when resuming (only "
                f"{', '.join('.'.join(k) for k in sorted(RESUMABLE_KEYS))}); "
                "start a new run instead"
            )
    return Config.from_dict(apply_overrides(saved, overrides)).validate()


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[dict[str, bool]]:
    """First Ctrl-C asks the loop to checkpoint and stop at the next step; a second one kills."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        flag["stop"] = True
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def lr_mult_groups(model: torch.nn.Module, lr_mult: dict[str, float]) -> list[dict[str, Any]]:
    """One optimizer group per `lr_mult` prefix (the longest matching prefix wins), plus one
    group at multiplier 1 for the other parameters; each group carries its `lr_mult`."""
    named = list(model.named_parameters())
    unused = [p for p in lr_mult if not any(name.startswith(p) for name, _ in named)]
    if unused:
        raise ConfigError(
            f"train.lr_mult prefix {unused[0]!r} matches no parameter; parameter names start "
            f"with: {', '.join(sorted({name.split('.')[0] for name, _ in named}))}"
        )
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, param in named:
        prefixes = [p for p in lr_mult if name.startswith(p)]
        mult = float(lr_mult[max(prefixes, key=len)]) if prefixes else 1.0
        groups.setdefault(mult, []).append(param)
    return [{"params": params, "lr_mult": mult} for mult, params in groups.items()]


def make_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = config.train
    groups = lr_mult_groups(model, t.lr_mult)
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The training forward pass's precision: bfloat16 autocast (no loss scaling needed, its
    exponent range is fp32's) or plain fp32."""
    enabled = resolve_precision(precision, device) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` → bf16 where the device computes it natively (measured on an AMX CPU: 1.3-1.7x
    faster Conv-4 steps; slower on CPUs without bf16 units), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_amx_bf16() else "fp32"


def cpu_has_amx_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and "amx_bf16" in line for line in f)
    except OSError:
        return False


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group at `lr` times its `lr_mult` (groups of checkpoints from before `lr_mult`
    have none: multiplier 1)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


def learning_rate(config: Config, step: int) -> float:
    """The outer learning rate at `step` (0-based) under the configured schedule."""
    t = config.train
    if t.lr_schedule == "linear":
        return t.lr * (1 - step / max(t.episodes, 1))
    return t.lr * t.lr_gamma ** (step // t.lr_step)


def validate(
    algorithm: Algorithm, sampler: EpisodeSampler, config: Config, device: torch.device
) -> EvalResult | RegressionResult:
    """Accuracy (classification) or MSE after the most adaptation steps (regression) on val."""
    t = config.train
    if algorithm_task(algorithm) == "regression":
        return evaluate_regression(
            algorithm,
            sampler,
            steps=[max(config.eval.adapt_steps)],
            episodes=t.val_episodes,
            split=t.val_split,
            device=device,
        )
    return evaluate(algorithm, sampler, t.val_episodes, split=t.val_split, device=device)


def runtime(
    algorithm: Algorithm, config: Config, device: torch.device, ctx: distributed.Context
) -> dict[str, Any]:
    """The device-dependent choices this run made, recorded in its summary and checkpoints."""
    use_vmap = getattr(algorithm, "_use_vmap", None)
    return {
        "device": device.type,
        "processes": ctx.world,
        "threads": torch.get_num_threads(),
        "precision": resolve_precision(config.train.precision, device),
        "channels_last": bool(getattr(algorithm.backbone, "channels_last", False)),
        **({"inner_loop": "vmap" if use_vmap(device) else "loop"} if use_vmap else {}),
    }


def algorithm_task(algorithm: Algorithm) -> str:
    return getattr(algorithm, "task", "classification")


def val_row(result: EvalResult | RegressionResult) -> dict[str, float]:
    if isinstance(result, RegressionResult):
        return {"mse": result.mse[-1], "ci95": result.ci95[-1]}
    return {"accuracy": result.accuracy, "ci95": result.ci95}


def check_run_dir(out: Path, resume: bool) -> Path:
    """The run's last checkpoint path, after refusing to resume nothing or overwrite a run."""
    last = out / "checkpoints" / "last.safetensors"
    if resume and not last.exists():
        raise ConfigError(f"nothing to resume: {last} does not exist")
    if not resume and last.exists():
        raise ConfigError(
            f"{out} already holds a run; pass --resume to continue it, or pick another --out"
        )
    return last


def train(config: Config, out: Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train `config` into run directory `out`; return a summary (steps, best val, speed).
    Under torchrun, the processes share each step's tasks (see `engine/distributed.py`)."""
    config.validate()
    device = resolve_device(config.device)
    ctx = distributed.setup(device)
    try:
        return _train(config, Path(out), resume, progress, device, ctx)
    finally:
        distributed.teardown()


def _train(
    config: Config,
    out: Path,
    resume: bool,
    progress: bool,
    device: torch.device,
    ctx: distributed.Context,
) -> dict[str, Any]:
    t, e = config.train, config.eval
    last = check_run_dir(out, resume)
    distributed.barrier(ctx)  # every rank has checked the run directory before rank 0 writes
    offset, per_rank = ctx.shard(t.meta_batch) if ctx.active else (0, t.meta_batch)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults for each iteration's activations (see memory.py)
    torch.manual_seed(config.seed)
    dataset = build_dataset(config)
    sampler: EpisodeSampler | BatchSampler
    if getattr(ALGORITHMS.get(config.algorithm["name"]), "supervised", False):
        # supervised pretraining (baseline): labelled minibatches over all training classes
        if ctx.active:
            raise ConfigError(
                "several processes share episodic meta-batches; supervised pretraining "
                f"({config.algorithm['name']}) runs in one process"
            )
        train_split = dataset.split(t.split)  # type: ignore[attr-defined]
        config.algorithm.setdefault("num_classes", train_split.num_classes)
        sampler = BatchSampler(train_split, t.batch_size, seed=config.seed)
    else:
        sampler = dataset.sampler(t.split, t.ways, t.shots, t.queries, seed=config.seed)
    # built now, so an impossible val setting fails before an hour of training, not after
    val_sampler = dataset.sampler(t.val_split, e.ways, e.shots, e.queries, seed=e.seed)
    algorithm = build_algorithm(config, dataset.inputs, dataset.task).to(device)
    optimizer = make_optimizer(config, algorithm)

    step, best, seconds = 0, -math.inf, 0.0
    if resume:
        meta = load_checkpoint(last, algorithm, optimizer, restore_rng=True)
        step, best, seconds = meta["step"], meta["best_metric"], meta.get("train_seconds", 0.0)
    saved = {"last": step if resume else None}
    config.metakit_version = __version__
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    base_meta = {
        "config": config.to_dict(),
        "preprocess": dataset.preprocess.to_dict() if dataset.preprocess else None,
        "inputs": dataset.inputs,
        "task": dataset.task,
        "seed": config.seed,
        "metakit_version": __version__,
        "runtime": runtime(algorithm, config, device, ctx),
        "metric": f"{t.val_split}_accuracy"
        if dataset.task != "regression"
        else f"-{t.val_split}_mse",  # best_metric is maximised, so MSE is stored negated
    }

    def checkpoint(name: str) -> None:
        meta = {**base_meta, "step": step, "best_metric": best, "train_seconds": seconds}
        if ctx.main:
            save_checkpoint(out / "checkpoints" / f"{name}.safetensors", algorithm, meta, optimizer)
        saved[name] = step

    window: dict[str, float] = {}
    window_steps, window_start = 0, time.perf_counter()
    bar = tqdm(
        total=t.episodes, initial=step, disable=not progress or not ctx.main, unit="step",
        desc=config.name,
    )  # fmt: skip
    logs = RunLogger(out, start_step=step) if ctx.main else contextlib.nullcontext(NullLogger())
    with logs as logger, stop_on_interrupt() as interrupt:
        algorithm.train()
        budget = t.minutes * 60 if t.minutes > 0 else math.inf
        while step < t.episodes and seconds < budget:
            tic = time.perf_counter()
            lr = learning_rate(config, step)
            set_learning_rate(optimizer, lr)
            if ctx.active:  # this rank's contiguous share of the step's tasks
                batch = sampler.batch(step * t.meta_batch + offset, per_rank)
            elif t.meta_batch == 1:
                batch = sampler.sample(step)
            else:
                batch = sampler.batch(step * t.meta_batch, t.meta_batch)
            with autocast(t.precision, device):
                loss, metrics = algorithm.meta_loss(batch.to(device))
            metrics = distributed.mean_over_ranks(metrics, ctx)  # NaN anywhere stops every rank
            if not math.isfinite(metrics["loss"]):
                held = (
                    f"resume from the last checkpoint (step {saved['last']}) with --resume"
                    if saved["last"] is not None
                    else "start again (no checkpoint was written yet)"
                )
                raise TrainingError(
                    f"the loss became {metrics['loss']} at step {step + 1}; stopping. Lower "
                    f"train.lr (now {lr:g}) or set train.grad_clip, then {held}."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(list(algorithm.parameters()), ctx)
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(algorithm.parameters(), t.grad_clip)
            optimizer.step()
            step += 1
            seconds += time.perf_counter() - tic
            # every rank must take the same branch below (validation and checkpoints gather):
            # the slowest rank's clock decides the budget, a Ctrl-C on any rank stops them all
            agreed = distributed.max_over_ranks(
                {"seconds": seconds, "stop": float(interrupt["stop"])}, ctx
            )
            seconds, stop = agreed["seconds"], agreed["stop"] > 0
            last_step = step == t.episodes or seconds >= budget

            for key, value in metrics.items():
                window[key] = window.get(key, 0.0) + value
            window_steps += 1
            bar.update(1)
            if step % t.log_every == 0 or last_step:
                elapsed = time.perf_counter() - window_start
                row = {k: v / window_steps for k, v in window.items()}
                row.update(lr=lr, episodes_per_s=window_steps * t.meta_batch / max(elapsed, 1e-9))
                logger.log(step, "train", row)
                shown = {"acc": row["accuracy"]} if "accuracy" in row else {"mse": row.get("mse")}
                bar.set_postfix(
                    loss=f"{row['loss']:.3f}",
                    **{k: f"{v:.3f}" for k, v in shown.items() if v is not None},
                    ep_s=f"{row['episodes_per_s']:.1f}",
                )
                window, window_steps, window_start = {}, 0, time.perf_counter()

            if step % t.val_every == 0 or last_step or stop:
                # BatchNorm averages are linear in the batches: averaging them only when they are
                # used or saved gives what averaging after every step would
                distributed.average_buffers(algorithm, ctx)
            if step % t.val_every == 0 or last_step:
                val_start = time.perf_counter()
                val = validate(algorithm, val_sampler, config, device)
                logger.log(step, "val", val_row(val))
                bar.write(f"step {step}: {t.val_split} {val.summary()}", file=sys.stderr)
                if val.score > best:
                    best = val.score
                    checkpoint("best")
                checkpoint("last")
                window_start += time.perf_counter() - val_start  # episodes/s counts training only
            if stop:
                checkpoint("last")
                bar.close()
                raise KeyboardInterrupt(
                    f"interrupted at step {step}; checkpoint saved, continue with --resume"
                )
        bar.close()
    return {
        "steps": step,
        "stopped_by": "minutes" if step < t.episodes else "episodes",
        "task": dataset.task,
        **(
            {"best_val_accuracy": best} if dataset.task != "regression" else {"best_val_mse": -best}
        ),
        "train_seconds": round(seconds, 2),
        "episodes_per_s": round(step * t.meta_batch / max(seconds, 1e-9), 2),
        "processes": ctx.world,
        "allreduce_seconds": round(distributed.COMMUNICATION["seconds"], 3),
        "runtime": runtime(algorithm, config, device, ctx),
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "run_dir": str(out),
    }
