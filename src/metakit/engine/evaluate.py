"""Few-shot evaluation on fixed-seed episodes: mean accuracy (or MSE) with a 95% CI."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from metakit.algorithms.base import Algorithm
from metakit.data.source import EpisodeSampler
from metakit.engine import distributed
from metakit.errors import ConfigError


@dataclass
class EvalResult:
    accuracy: float  # mean over episodes, a fraction in [0, 1]
    ci95: float  # half-width of the 95% confidence interval, a fraction
    episodes: int
    ways: int
    shots: int
    queries: int
    split: str
    seconds: float
    seed: int

    task = "classification"

    @property
    def score(self) -> float:
        """Higher is better; what model selection maximises."""
        return self.accuracy

    def to_dict(self) -> dict:
        return {"task": self.task, **asdict(self)}

    def summary(self) -> str:
        return (
            f"accuracy {100 * self.accuracy:.2f}% ± {100 * self.ci95:.2f} (95% CI) on "
            f"{self.episodes} {self.ways}-way {self.shots}-shot episodes, {self.queries} queries "
            f"per class, split {self.split!r}, {self.seconds:.1f}s"
        )


@dataclass
class RegressionResult:
    steps: list[int]  # adaptation steps on the support set
    mse: list[float]  # mean query MSE over tasks after each number of steps
    ci95: list[float]
    episodes: int
    shots: int
    queries: int
    split: str
    seconds: float
    seed: int

    task = "regression"

    @property
    def score(self) -> float:
        return -self.mse[-1]

    def to_dict(self) -> dict:
        return {"task": self.task, **asdict(self)}

    def summary(self) -> str:
        parts = ", ".join(
            f"{s} step{'s' if s != 1 else ''}: {m:.3f} ± {c:.3f}"
            for s, m, c in zip(self.steps, self.mse, self.ci95, strict=True)
        )
        return (
            f"query MSE (95% CI) after {parts}; {self.episodes} tasks, {self.shots}-shot, "
            f"{self.queries} query points, split {self.split!r}, {self.seconds:.1f}s"
        )


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and 1.96 standard errors (normal approximation over independent episodes)."""
    values = values.double()
    n = values.numel()
    if n < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), 1.96 * float(values.std(unbiased=True)) / math.sqrt(n)


def evaluate(
    algorithm: Algorithm,
    sampler: EpisodeSampler,
    episodes: int = 1000,
    split: str = "test",
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> EvalResult:
    """Adapt on each episode's support set and score its queries, exactly as a user would.
    Under torchrun, each process scores every N-th episode and the accuracies are gathered, so
    mean and CI are those of one process."""
    ctx = distributed.current()
    was_training = algorithm.training
    algorithm.eval()
    mine = range(ctx.rank, episodes, ctx.world)
    accs = torch.empty(len(mine))
    start = time.perf_counter()
    bar = tqdm(mine, desc=f"eval {split}", disable=not progress or not ctx.main, unit="ep")
    try:
        for j, i in enumerate(bar):
            ep = sampler.sample(i).to(device)
            with algorithm.inference():
                logits = algorithm.logits(algorithm.adapt(ep.support_x, ep.support_y), ep.query_x)
            accs[j] = (logits.argmax(-1) == ep.query_y).float().mean().item()
    finally:
        algorithm.train(was_training)
    mean, ci = mean_ci95(distributed.gather_by_index(accs, episodes, ctx))
    return EvalResult(
        accuracy=mean,
        ci95=ci,
        episodes=episodes,
        ways=sampler.ways,
        shots=sampler.shots,
        queries=sampler.queries,
        split=split,
        seconds=round(time.perf_counter() - start, 3),
        seed=sampler.seed,
    )


def evaluate_instances(
    algorithm: Algorithm,
    sampler: EpisodeSampler,
    episodes: int = 1000,
    instances: Sequence[int] = (1, 2, 3, 4, 5, 10),
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, dict[str, float | None]]:
    """Accuracy by presentation number for sequence learners (MANN): each episode becomes a
    random sequence (order drawn from `(sampler.seed, i)`), and the accuracy at the k-th
    presentation of a class is averaged over the episodes where one occurs, with a 95% CI."""
    from metakit.data.sampler import episode_generator

    if not hasattr(algorithm, "instance_correct"):
        raise ConfigError(f"{algorithm.name} does not learn from sequences; no per-instance score")
    was_training = algorithm.training
    algorithm.eval()
    per_instance: dict[int, list[float]] = {k: [] for k in instances}
    try:
        for i in tqdm(range(episodes), desc="eval by instance", disable=not progress, unit="ep"):
            ep = sampler.sample(i).to(device)
            with torch.inference_mode():
                correct, number = algorithm.instance_correct(  # type: ignore[operator]
                    ep, episode_generator(sampler.seed, i, "sequence")
                )
            for k in instances:
                hit = number == k
                if hit.any():
                    per_instance[k].append(correct[hit].float().mean().item())
    finally:
        algorithm.train(was_training)
    out = {}
    for k, values in per_instance.items():
        mean, ci = mean_ci95(torch.tensor(values)) if values else (None, None)
        out[str(k)] = {"accuracy": mean, "ci95": ci, "episodes": len(values)}
    return out


def evaluate_regression(
    algorithm: Algorithm,
    sampler: EpisodeSampler,
    steps: Sequence[int] = (1, 5, 10),
    episodes: int = 1000,
    split: str = "test",
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> RegressionResult:
    """Query MSE after each number of adaptation `steps` on the support points of each task."""
    if getattr(algorithm, "task", None) != "regression":
        raise ConfigError(f"{algorithm.name} is not a regression learner")
    if not steps or min(steps) < 0:
        raise ConfigError(f"adaptation steps must be a non-empty list of counts >= 0: {steps}")
    was_training = algorithm.training
    algorithm.eval()
    errors = torch.empty(len(steps), episodes)
    start = time.perf_counter()
    try:
        for i in tqdm(range(episodes), desc=f"eval {split}", disable=not progress, unit="task"):
            ep = sampler.sample(i).to(device)
            for j, k in enumerate(steps):
                with algorithm.inference():
                    state = algorithm.adapt(ep.support_x, ep.support_y, steps=k)  # type: ignore[call-arg]
                    pred = algorithm.logits(state, ep.query_x)
                errors[j, i] = F.mse_loss(pred, ep.query_y).item()
    finally:
        algorithm.train(was_training)
    stats = [mean_ci95(row) for row in errors]
    return RegressionResult(
        steps=list(steps),
        mse=[m for m, _ in stats],
        ci95=[c for _, c in stats],
        episodes=episodes,
        shots=sampler.shots,
        queries=sampler.queries,
        split=split,
        seconds=round(time.perf_counter() - start, 3),
        seed=sampler.seed,
    )
