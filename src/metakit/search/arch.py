"""Architecture search with weight sharing (ENAS macro space), read top to bottom.

1. Search, in epochs. Each epoch trains the shared supernet weights for `shared_steps`
   minibatches, each through a child sampled from the policy, then takes `controller_steps`
   evaluations: a child is sampled, its reward is its accuracy on a validation minibatch (with
   the shared weights), and the controller takes a REINFORCE step. Random search
   (`policy: random`) is the same loop with uniform sampling and no controller update, so both
   get the same number of sampled children and evaluations.
2. Derive: `derive_samples` children from the final policy, each scored on the same
   `derive_images` validation images; the best is written to `arch.json`.
3. Retrain that architecture from scratch on the training images and score it once on the test
   split.
State is checkpointed after every epoch (and retraining epoch) in one atomic file, so a run
resumes after an interruption and ends as an uninterrupted one would; `history.jsonl` holds every
evaluated design and its reward.
"""

from __future__ import annotations

import json
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
from metakit.engine.checkpoint import load_state, save_state
from metakit.engine.trainer import check_run_dir
from metakit.errors import ConfigError
from metakit.search.child import (
    ImageData,
    accuracy,
    ci95,
    classification_step,
    load_image_data,
    minibatch,
)
from metakit.search.controller import Controller, RandomPolicy, Reinforce
from metakit.search.run import search_logs, write_json
from metakit.search.supernet import (
    OPS,
    Architecture,
    ChildNet,
    Supernet,
    macro_space,
    parameter_count,
)

KIND = "search-arch"


@dataclass
class ArchSearchConfig:
    kind: str = KIND
    seed: int = 0
    policy: str = "controller"  # or "random"
    budget: float = 45.0  # minutes for search + derive + retraining; 0 = epochs decide alone
    retrain_share: float = 0.3  # part of the budget kept for retraining
    dataset: str = "fashion-mnist"
    val_images: int = 5000
    layers: int = 6
    ops: list[str] = field(default_factory=lambda: list(OPS))
    channels: int = 32
    epochs: int = 1000  # search epochs (the budget usually stops the search first)
    shared_steps: int = 50
    batch_size: int = 64
    shared_lr: float = 0.05  # SGD, Nesterov momentum 0.9, weight decay 1e-4
    controller_steps: int = 10  # evaluations (children rewarded) per epoch
    reward_images: int = 500
    controller: dict[str, Any] = field(
        default_factory=lambda: {"hidden": 64, "temperature": 5.0, "tanh_constant": 2.5}
    )
    controller_lr: float = 1e-3
    entropy_weight: float = 1e-4
    baseline_decay: float = 0.95
    derive_samples: int = 20
    derive_images: int = 2000
    retrain_epochs: float = 10.0  # passes over the training images (fractions allowed)
    retrain_lr: float = 0.05  # SGD, Nesterov momentum 0.9, cosine to 0
    metakit_version: str = ""

    def validate(self) -> ArchSearchConfig:
        if self.policy not in ("controller", "random"):
            raise ConfigError(f"policy must be controller or random, got {self.policy!r}")
        if self.budget < 0 or not 0 <= self.retrain_share < 1:
            raise ConfigError("budget must be >= 0 minutes and retrain_share in [0, 1)")
        counts = (self.epochs, self.shared_steps, self.batch_size, self.controller_steps)
        if min(*counts, self.reward_images, self.derive_samples, self.derive_images) < 1:
            raise ConfigError(
                "epochs, shared_steps, batch_size, controller_steps, reward_images, "
                "derive_samples and derive_images must be >= 1"
            )
        if self.retrain_epochs < 0:
            raise ConfigError("retrain_epochs must be >= 0 (0 skips retraining)")
        macro_space(self.layers, self.ops)  # checks layers and ops
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_search_config(
    path: Path | None = None, overrides: list[str] | None = None
) -> ArchSearchConfig:
    d = {**ArchSearchConfig().to_dict(), **(read_yaml(path) if path is not None else {})}
    if d["kind"] != KIND:
        raise ConfigError(f"{path} is a {d['kind']!r} config, not an architecture search")
    return _build(ArchSearchConfig, apply_overrides(d, overrides or []), "search").validate()


class ArchSearch:
    """The modules, optimizers and random streams of one search, and its steps."""

    def __init__(self, config: ArchSearchConfig, data: ImageData) -> None:
        self.config, self.data = config, data
        torch.manual_seed(config.seed)
        self.space = macro_space(config.layers, config.ops)
        self.supernet = Supernet(
            data.in_channels, config.channels, config.layers, data.num_classes, config.ops
        )
        self.shared_opt = torch.optim.SGD(
            self.supernet.parameters(),
            lr=config.shared_lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=1e-4,
        )
        self.controller = Controller(self.space, **config.controller)
        self.reinforce = Reinforce(
            self.controller, config.controller_lr, config.baseline_decay, config.entropy_weight
        )
        self.policy = self.controller if config.policy == "controller" else RandomPolicy(self.space)
        self.sample_gen = torch.Generator().manual_seed(config.seed)
        self.data_gen = torch.Generator().manual_seed(config.seed + 1)

    # -- state ---------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict, dict]:
        return (
            {"supernet": self.supernet, "controller": self.controller},
            {"shared": self.shared_opt, "controller": self.reinforce.optimizer},
            {"sample": self.sample_gen, "data": self.data_gen},
        )

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        save_state(path, *self.state(), {**meta, "baseline": self.reinforce.baseline})

    def load(self, path: Path) -> dict[str, Any]:
        meta = load_state(path, *self.state())
        self.reinforce.baseline = meta["baseline"]
        return meta

    # -- one epoch -----------------------------------------------------------------------
    def architecture(self, tokens: list[int]) -> Architecture:
        return Architecture.from_tokens(self.space, tokens)

    def train_shared(self) -> dict[str, float]:
        c, d = self.config, self.data
        self.supernet.train()
        losses, accs = [], []
        for _ in range(c.shared_steps):
            with torch.no_grad():
                tokens = self.policy.sample(1, self.sample_gen).designs()[0]
            arch = self.architecture(tokens)
            xb, yb = minibatch(d.train_x, d.train_y, c.batch_size, self.data_gen)
            loss, acc = classification_step(
                lambda x, arch=arch: self.supernet(x, arch), self.supernet, self.shared_opt, xb, yb
            )
            losses.append(loss)
            accs.append(acc)
        return {"shared_loss": sum(losses) / len(losses), "shared_accuracy": sum(accs) / len(accs)}

    def evaluate_children(self) -> list[dict[str, Any]]:
        """`controller_steps` children rewarded on validation minibatches (REINFORCE steps for
        the controller); one history row each."""
        c, d = self.config, self.data
        rows = []
        for _ in range(c.controller_steps):
            sample = self.policy.sample(1, self.sample_gen)
            tokens = sample.designs()[0]
            arch = self.architecture(tokens)
            xb, yb = minibatch(d.val_x, d.val_y, c.reward_images, self.data_gen)
            with torch.no_grad():
                reward = float((self.supernet(xb, arch).argmax(-1) == yb).float().mean())
            row: dict[str, Any] = {"arch": str(arch), "tokens": tokens, "reward": reward}
            if c.policy == "controller":
                row["entropy"] = float(sample.entropy.detach())
                row.update(self.reinforce.step(sample, torch.tensor([reward])))
            rows.append(row)
        return rows

    def derive(self) -> tuple[Architecture, list[dict[str, Any]]]:
        """Best of `derive_samples` children of the final policy on fixed validation images."""
        c, d = self.config, self.data
        x, y = d.val_x[: c.derive_images], d.val_y[: c.derive_images]
        with torch.no_grad():
            designs = self.policy.sample(c.derive_samples, self.sample_gen).designs()
        rows = []
        for tokens in designs:
            arch = self.architecture(tokens)
            score = accuracy(lambda xb, arch=arch: self.supernet(xb, arch), x, y, batch_size=500)
            rows.append({"arch": str(arch), "tokens": tokens, "reward": score})
        best = max(rows, key=lambda r: r["reward"])
        return Architecture.parse(best["arch"]), rows


def retrain(
    net: torch.nn.Module,
    config: ArchSearchConfig,
    data: ImageData,
    path: Path,
    seconds: float = math.inf,
    progress: bool = False,
    interrupt: dict[str, bool] | None = None,
) -> dict[str, Any]:
    """Train a fresh classifier `net` (the derived `ChildNet`, or a baseline at equal settings)
    on the training images, resuming from `path` if it exists, within `seconds` (inf: no limit);
    score it on the test split. The cosine schedule is fitted to the steps that fit."""
    interrupt = interrupt or {"stop": False}
    opt = torch.optim.SGD(
        net.parameters(), lr=config.retrain_lr, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    gen = torch.Generator().manual_seed(config.seed + 3)
    per_epoch = math.ceil(len(data.train_x) / config.batch_size)
    planned = max(1, round(config.retrain_epochs * per_epoch))
    step, spent = 0, 0.0
    if path.exists():
        meta = load_state(path, {"net": net}, {"opt": opt}, {"data": gen})
        step, spent, planned = meta["step"], meta["seconds"], meta["planned"]
    bar = tqdm(total=planned, initial=step, disable=not progress, unit="step", desc="retrain")
    while step < planned:
        tic = time.perf_counter()
        net.train()
        for g in opt.param_groups:
            g["lr"] = config.retrain_lr * 0.5 * (1 + math.cos(math.pi * step / planned))
        xb, yb = minibatch(data.train_x, data.train_y, config.batch_size, gen, flip=True)
        loss, _ = classification_step(net, net, opt, xb, yb)
        step += 1
        spent += time.perf_counter() - tic
        bar.update(1)
        if step == 20 and math.isfinite(seconds):  # fit the schedule to the time left
            fits = int(seconds / (spent / step))
            planned = max(step + 1, min(planned, fits))
            bar.total = planned
        if step % per_epoch == 0 or step == planned or interrupt["stop"]:
            bar.set_postfix(loss=f"{loss:.3f}")
            save_state(path, {"net": net}, {"opt": opt}, {"data": gen}, {
                "step": step, "seconds": spent, "planned": planned
            })  # fmt: skip
            if interrupt["stop"]:
                bar.close()
                raise KeyboardInterrupt(
                    f"interrupted in retraining at step {step}; continue with --resume"
                )
    bar.close()
    net.eval()
    test = accuracy(net, data.test_x, data.test_y)
    return {
        "test_accuracy": test,
        "test_ci95": ci95(test, len(data.test_x)),
        "val_accuracy": accuracy(net, data.val_x, data.val_y),
        "params": parameter_count(net),
        "retrain_steps": step,
        "retrain_seconds": round(spent, 1),
    }


def search_architecture(
    config: ArchSearchConfig,
    out: Path,
    resume: bool = False,
    progress: bool = True,
    data: ImageData | None = None,
) -> dict[str, Any]:
    """Run (or resume) a search into `out`; returns what `result.json` holds."""
    config.validate()
    out = Path(out)
    last = check_run_dir(out, resume)
    data = data or load_image_data(config.dataset, config.val_images, config.seed)
    search = ArchSearch(config, data)
    epoch, seconds, meta = 0, 0.0, {}
    if resume:
        meta = search.load(last)
        epoch, seconds = meta["epoch"], meta["seconds"]
    config.metakit_version = __version__
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    budget = config.budget * 60 if config.budget > 0 else math.inf
    search_budget = budget * (1 - config.retrain_share)

    def checkpoint(**extra: Any) -> None:
        search.save(last, {"kind": KIND, "epoch": epoch, "seconds": seconds, **extra})

    with search_logs(out, epoch) as (metrics, history, interrupt):
        if "arch" not in meta:
            bar = tqdm(
                total=config.epochs, initial=epoch, disable=not progress, unit="epoch",
                desc=f"search ({config.policy})",
            )  # fmt: skip
            while epoch < config.epochs and seconds < search_budget:
                tic = time.perf_counter()
                row = search.train_shared()
                children = search.evaluate_children()
                epoch += 1
                seconds += time.perf_counter() - tic
                for child in children:
                    history.log(epoch, "search", child)
                rewards = [c["reward"] for c in children]
                row["reward"] = sum(rewards) / len(rewards)
                if config.policy == "controller":
                    row["entropy"] = sum(c["entropy"] for c in children) / len(children)
                    row["baseline"] = search.reinforce.baseline
                row["seconds"] = seconds
                metrics.log(epoch, "search", row)
                bar.update(1)
                bar.set_postfix(
                    {k: f"{row[k]:.3f}" for k in ("reward", "entropy", "shared_loss") if k in row}
                )
                checkpoint()
                if interrupt["stop"]:
                    bar.close()
                    raise KeyboardInterrupt(
                        f"interrupted at search epoch {epoch}; checkpoint saved, continue with "
                        "--resume"
                    )
            bar.close()
            tic = time.perf_counter()
            arch, derived = search.derive()
            seconds += time.perf_counter() - tic
            for row in derived:
                history.log(epoch, "derive", row)
            best = max(r["reward"] for r in derived)
            meta = {"arch": str(arch), "derived_val_accuracy": best}
            checkpoint(**meta)
            write_json(
                out / "arch.json", {**meta, "channels": config.channels, "dataset": config.dataset}
            )
            print(f"derived {arch} (val accuracy {best:.4f})", file=sys.stderr)
        arch = Architecture.parse(meta["arch"])
        result: dict[str, Any] = {
            "kind": KIND,
            "policy": config.policy,
            "seed": config.seed,
            "arch": str(arch),
            "derived_val_accuracy": meta["derived_val_accuracy"],
            "epochs": epoch,
            "evaluations": epoch * config.controller_steps,
            "search_seconds": round(seconds, 1),
        }
        if config.retrain_epochs > 0:
            left = budget - seconds if math.isfinite(budget) else math.inf
            torch.manual_seed(config.seed + 2)
            net = ChildNet(arch, data.in_channels, config.channels, num_classes=data.num_classes)
            result.update(
                retrain(
                    net, config, data, out / "checkpoints" / "retrain.safetensors",
                    max(left, 60.0), progress, interrupt,
                )
            )  # fmt: skip
    result["dataset"] = config.dataset
    write_json(out / "result.json", result)
    return result


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "history.jsonl"
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a search run (no history.jsonl)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
