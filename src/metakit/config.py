"""Run configuration: dataclasses, YAML recipes, and `--set key=value` overrides.

`data`, `backbone` and `algorithm` are open sections (`name` plus that entry's options); they
are validated against the registered factory's signature when the run is built.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from metakit.errors import ConfigError
from metakit.registry import coerce_value


@dataclass
class TrainConfig:
    split: str = "train"
    val_split: str = "val"
    ways: int = 60
    shots: int = 1
    queries: int = 5
    episodes: int = 5000  # optimizer steps; each sees `meta_batch` episodes
    # training-time budget in minutes (validation excluded); 0 = none. Training stops at
    # whichever comes first, `episodes` or `minutes`; schedules are still defined on episodes.
    minutes: float = 0.0
    meta_batch: int = 1
    batch_size: int = 128  # minibatch of supervised algorithms (baseline); not for episodes
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only; Reptile's outer step uses plain SGD (momentum 0)
    weight_decay: float = 0.0
    # "step": lr *= lr_gamma every lr_step steps; "linear": anneal lr to 0 at the last step
    lr_schedule: Literal["step", "linear"] = "step"
    lr_step: int = 2000
    lr_gamma: float = 0.5
    grad_clip: float = 0.0  # max global grad norm; 0 disables clipping
    # "bf16": the training forward pass under bfloat16 autocast (weights, gradients and optimizer
    # state stay fp32; validation and evaluation run in fp32). 1.3-1.7x faster conv4 steps on CPUs
    # with AMX / AVX512-BF16, slower on CPUs without bf16 units. "auto": bf16 where the device
    # has bf16 units (a CUDA GPU that supports it, a CPU with AMX-BF16), fp32 elsewhere; the
    # choice is recorded in the run's summary and checkpoints (`runtime.precision`).
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    # learning-rate multipliers by parameter-name prefix, e.g. {log_scale: 300}: a learned
    # temperature needs a far larger step than the pretrained encoder it is fine-tuned with
    lr_mult: dict[str, float] = field(default_factory=dict)
    val_every: int = 500  # validate and checkpoint every N steps
    val_episodes: int = 200
    log_every: int = 25


@dataclass
class EvalConfig:
    split: str = "test"
    ways: int = 5
    shots: int = 1
    queries: int = 15
    episodes: int = 1000
    seed: int = 0  # test episodes are fixed by this seed, independent of the training seed
    # which checkpoint `metakit eval` scores: "best" (selected on val) or "last" (fixed schedule,
    # for recipes that train on trainval as the papers do, where no held-out val is left)
    checkpoint: Literal["best", "last"] = "best"
    # regression tasks: report query MSE after each of these numbers of adaptation steps
    adapt_steps: list[int] = field(default_factory=lambda: [1, 5, 10])


@dataclass
class Config:
    name: str = "custom"
    description: str = ""
    seed: int = 0
    metakit_version: str = ""  # filled in by the trainer, so a run says what produced it
    device: str = "auto"
    data: dict[str, Any] = field(default_factory=lambda: {"name": "omniglot"})
    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "conv4"})
    algorithm: dict[str, Any] = field(default_factory=lambda: {"name": "protonet"})
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return _build(cls, d, "config")

    def validate(self) -> Config:
        t = self.train
        checks = [
            (
                t.ways >= 1 and t.shots >= 1 and t.queries >= 1,
                "train ways/shots/queries must be >= 1",
            ),
            (t.episodes >= 0, "train.episodes must be >= 0"),
            (t.minutes >= 0, f"train.minutes must be >= 0 (0 = no time limit), got {t.minutes}"),
            (t.meta_batch >= 1, "train.meta_batch must be >= 1"),
            (t.batch_size >= 1, "train.batch_size must be >= 1"),
            (t.lr > 0, f"train.lr must be positive, got {t.lr}"),
            (t.lr_step >= 1, "train.lr_step must be >= 1"),
            (0 < t.lr_gamma <= 1, "train.lr_gamma must lie in (0, 1]"),
            (t.val_every >= 1 and t.log_every >= 1, "train.val_every and log_every must be >= 1"),
            (self.eval.episodes >= 1, "eval.episodes must be >= 1"),
            (t.momentum >= 0, f"train.momentum must be >= 0, got {t.momentum}"),
            (
                all(isinstance(m, int | float) and m > 0 for m in t.lr_mult.values()),
                f"train.lr_mult values must be positive numbers, got {t.lr_mult}",
            ),
            (
                bool(self.eval.adapt_steps) and min(self.eval.adapt_steps) >= 0,
                "eval.adapt_steps must list step counts >= 0",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        for section in ("data", "backbone", "algorithm"):
            if "name" not in getattr(self, section):
                raise ConfigError(f"the {section} section needs a 'name'")
        return self


def _build(cls: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(
            f"unknown key {sorted(unknown)[0]!r} in {where}; accepted: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in d.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}.{key}")
        elif typing.get_origin(hint) is dict:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key} must be a mapping")
            kwargs[key] = dict(value)
        else:
            kwargs[key] = coerce_value(value, hint, f"{where}.{key}")
    return cls(**kwargs)


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=c` overrides to a config dict; values are parsed as YAML scalars."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.lr=0.001")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a config section")
            node = node[p]
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return d


def recipe_dir() -> Path:
    return Path(str(resources.files("metakit") / "recipes"))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config sections")
    return data


def recipe_path(recipe_or_path: str) -> Path:
    """The YAML file of a recipe name (see `metakit recipes`) or of a path."""
    path = Path(recipe_or_path)
    if not path.suffix:
        path = recipe_dir() / f"{recipe_or_path}.yaml"
        if not path.exists():
            raise ConfigError(
                f"no recipe named {recipe_or_path!r}; available: {', '.join(list_recipes())}"
            )
    elif not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    return path


def recipe_kind(path: Path) -> str:
    """`episodic` (the Config of this module) or `l2o` (a learned-optimizer run)."""
    return str(read_yaml(path).get("kind", "episodic"))


def load_config(recipe_or_path: str, overrides: list[str] | None = None) -> Config:
    """A recipe name (see `metakit recipes`) or a YAML file, plus overrides → validated Config."""
    path = recipe_path(recipe_or_path)
    d = read_yaml(path)
    if d.get("kind", "episodic") != "episodic":
        raise ConfigError(
            f"{path} is a {d['kind']!r} recipe, not an episodic one; `metakit train` runs it, "
            "or load it with metakit.l2o.train.load_l2o_config"
        )
    d.setdefault("name", path.stem)
    return Config.from_dict(apply_overrides(d, overrides or [])).validate()


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
