"""Helpers shared by the benchmark scripts: hardware description and result tables."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch


def hardware() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, str] = {}  # the first core's /proc/cpuinfo fields
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    return {
        "cpu": info.get("model name") or platform.processor() or "",
        # bf16 units decide whether train.precision=bf16 is faster (precision_speed.py)
        "bf16_units": sorted(flags & {"amx_bf16", "avx512_bf16"}),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def seed_mean_ci(values: list[float]) -> dict[str, Any]:
    """Mean over a few seeds with a t-based 95% half-width (None below two seeds)."""
    if len(values) < 2:
        return {"mean": values[0] if values else math.nan, "ci95": None, "n": len(values)}
    half = T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": statistics.mean(values), "ci95": half, "n": len(values)}


def hardware_line(hw: dict[str, Any]) -> str:
    """The hardware sentence under every results table."""
    return f"Hardware: {hw['cpu']}, {hw['cores']} cores, torch {hw['torch']}, GPU: {hw['gpu']}."


def metakit(*args: str) -> dict[str, Any]:
    """Run the metakit CLI in a fresh process (so peak memory is per run) and parse its JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", "metakit.cli", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"metakit {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def trained_run(recipe: str, run_dir: Path, summary_name: str = "train_summary.json") -> dict:
    """Train `recipe` into `run_dir` once (resuming an interrupted run) and keep its summary."""
    summary_file = run_dir / summary_name
    if summary_file.exists():
        return json.loads(summary_file.read_text())
    resume = (run_dir / "checkpoints" / "last.safetensors").exists()
    summary = metakit(
        "train", recipe, "--out", str(run_dir), "--no-progress", *(["--resume"] if resume else [])
    )
    summary_file.write_text(json.dumps(summary))
    return summary


def write_results(path: Path, results: dict[str, Any], markdown: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown)


def training_key(recipe: str, overrides: list[str]) -> str:
    """Recipes with the same key train the same model (they differ only in evaluation)."""
    from metakit.config import load_config

    d = load_config(recipe, overrides).to_dict()
    d.pop("eval"), d.pop("name"), d.pop("description")
    return json.dumps(d, sort_keys=True)


def existing_run(out: Path, key: str, overrides: list[str]) -> Path | None:
    """A run dir under `out` (named after its recipe) that trains the same model as `key`, so
    that a later invocation reuses it instead of training a copy."""
    from metakit.config import load_config
    from metakit.errors import MetakitError

    for run_dir in sorted(out.glob("*/checkpoints/last.safetensors")):
        name = run_dir.parent.parent.name
        try:
            load_config(name, overrides)
        except MetakitError:
            continue  # not a recipe name (a hand-made run dir)
        if training_key(name, overrides) == key:
            return run_dir.parent.parent
    return None


def train_and_evaluate(
    recipes: list[str],
    out: Path,
    overrides: list[str],
    episodes: int,
    published: dict[str, float],
    extra_eval: list[list[str]] | None = None,
) -> list[dict[str, Any]]:
    """Train each distinct model once (resuming an interrupted run), then evaluate every recipe
    on its own test setting with `episodes` fixed-seed episodes; one row per recipe (and per
    extra evaluation, e.g. `["--method", "nearest-centroid"]`), printed as it is done."""
    from metakit.config import load_config

    trained: dict[str, tuple[Path, dict[str, Any]]] = {}
    rows = []
    for recipe in recipes:
        key = training_key(recipe, overrides)
        if key not in trained:
            run_dir = existing_run(out, key, overrides) or out / recipe
            sets = [x for o in overrides for x in ("--set", o)]
            resume = (run_dir / "checkpoints" / "last.safetensors").exists()
            summary = metakit(
                "train", recipe, "--out", str(run_dir), "--no-progress", *sets,
                *(["--resume"] if resume else []),
            )  # fmt: skip
            trained[key] = (run_dir, {**summary, "trained_by": run_dir.name})
        run_dir, summary = trained[key]
        config = load_config(recipe, overrides).eval
        for extra in [[], *(extra_eval or [])]:
            start = time.perf_counter()
            result = metakit(
                "eval", str(run_dir), "--json", "--no-progress", "--split", config.split,
                "--ways", str(config.ways), "--shots", str(config.shots),
                "--queries", str(config.queries), "--episodes", str(episodes), *extra,
            )  # fmt: skip
            rows.append(
                {
                    "recipe": recipe,
                    "method": result.get("method", result.get("algorithm")),
                    **({"norm": result["norm"]} if "norm" in result else {}),
                    **({"eval_set": result["overrides"]} if result.get("overrides") else {}),
                    "accuracy": result["accuracy"],
                    "ci95": result["ci95"],
                    "published": published.get(recipe) if not extra else None,
                    "protocol": {
                        k: result[k]
                        for k in ("split", "ways", "shots", "queries", "episodes", "seed")
                    },
                    "checkpoint": config.checkpoint,
                    "eval_seconds": round(time.perf_counter() - start, 1),
                    "train": summary,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows
