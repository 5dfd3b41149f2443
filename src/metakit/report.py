"""Figures of trained runs: the sinusoid adaptation plot of Finn et al. 2017, Figure 2."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from metakit.errors import ConfigError


def adaptation_plot(
    run_dirs: Sequence[Path],
    out: Path,
    task: int = 0,
    steps: Sequence[int] = (0, 1, 10),
    checkpoint: str | None = None,
    overrides: Sequence[Sequence[str]] | None = None,
) -> Path:
    """One panel per regression run: the true curve of test task `task`, its K support points,
    and the run's predictions after each number of `steps`; written as a PNG to `out`.
    `overrides[i]` are test-time settings for run i (e.g. `algorithm.test_inner_lr=0.02`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metakit.engine.build import build_dataset, load_run, read_run_config

    if not run_dirs:
        raise ConfigError("give at least one run directory")
    fig, axes = plt.subplots(1, len(run_dirs), figsize=(5 * len(run_dirs), 4), squeeze=False)
    grid = torch.linspace(-5, 5, 200).unsqueeze(1)
    per_run = list(overrides or [[] for _ in run_dirs])
    if len(per_run) != len(run_dirs):
        raise ConfigError("give one list of overrides per run directory")
    for ax, run_dir, sets in zip(axes[0], run_dirs, per_run, strict=True):
        which = checkpoint or read_run_config(run_dir).eval.checkpoint
        config, algorithm, _, meta = load_run(run_dir, which, "cpu", list(sets))
        if meta.get("task") != "regression":
            raise ConfigError(f"{run_dir} is not a regression run; the adaptation plot needs one")
        e = config.eval
        sampler = build_dataset(config).sampler(e.split, 1, e.shots, e.queries, seed=e.seed)
        fn, _ = sampler.task(task)  # type: ignore[attr-defined]
        episode = sampler.sample(task)
        ax.plot(grid, fn(grid), color="black", lw=2, label="ground truth")
        for k in steps:
            with algorithm.inference():
                state = algorithm.adapt(episode.support_x, episode.support_y, steps=k)  # type: ignore[call-arg]
                pred = algorithm.logits(state, grid).detach()
            ax.plot(grid, pred, ls="--", label=f"after {k} step{'s' if k != 1 else ''}")
        ax.scatter(
            episode.support_x,
            episode.support_y,
            marker="^",
            s=60,
            zorder=3,
            label=f"{e.shots} support points",
        )
        lr = getattr(algorithm, "test_inner_lr", None)
        ax.set_title(f"{config.algorithm['name']} ({Path(run_dir).name}), step size {lr:g}")
        ax.set_xlabel("x")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("y")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
