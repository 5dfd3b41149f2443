"""Few-shot evaluation on fixed-seed episodes: mean accuracy with a 95% confidence interval."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from metakit.algorithms.base import Algorithm
from metakit.data.dataset import ClassDataset
from metakit.data.sampler import TaskSampler


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

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"accuracy {100 * self.accuracy:.2f}% ± {100 * self.ci95:.2f} (95% CI) on "
            f"{self.episodes} {self.ways}-way {self.shots}-shot episodes, {self.queries} queries "
            f"per class, split {self.split!r}, {self.seconds:.1f}s"
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
    dataset: ClassDataset,
    ways: int,
    shots: int,
    queries: int,
    episodes: int = 1000,
    seed: int = 0,
    split: str = "test",
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> EvalResult:
    """Adapt on each episode's support set and score its queries, exactly as a user would."""
    sampler = TaskSampler(dataset, ways, shots, queries, seed=seed)
    was_training = algorithm.training
    algorithm.eval()
    accs = torch.empty(episodes)
    start = time.perf_counter()
    try:
        for i in tqdm(range(episodes), desc=f"eval {split}", disable=not progress, unit="ep"):
            ep = sampler.sample(i).to(device)
            with algorithm.inference():
                logits = algorithm.logits(algorithm.adapt(ep.support_x, ep.support_y), ep.query_x)
            accs[i] = (logits.argmax(-1) == ep.query_y).float().mean().item()
    finally:
        algorithm.train(was_training)
    mean, ci = mean_ci95(accs)
    return EvalResult(
        accuracy=mean,
        ci95=ci,
        episodes=episodes,
        ways=ways,
        shots=shots,
        queries=queries,
        split=split,
        seconds=round(time.perf_counter() - start, 3),
        seed=seed,
    )
