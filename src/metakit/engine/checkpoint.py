"""Self-describing checkpoints: one safetensors file (weights, optimizer, RNG) with JSON metadata.

Everything needed to resume lives in a single file that is replaced atomically, so an
interruption leaves either the old or the new checkpoint, never a mix. A `.json` sidecar repeats
the metadata for humans. Nothing is unpickled when loading.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from metakit.errors import CheckpointError

MODEL, OPTIM, RNG = "model.", "optim.", "rng."


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)` then rename over `path` (same folder, so the rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, prefix: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state as named tensors (under `prefix`) and JSON metadata (the rest)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    prefix: str,
) -> None:
    """Inverse of `optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, name = key.removeprefix(prefix).split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    for idx, scalars in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Write weights (+ optimizer state and RNG state when resuming matters) and metadata."""
    tensors = {MODEL + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(meta)
    if optimizer is not None:
        optim_tensors, meta["optimizer"] = optimizer_tensors(optimizer, OPTIM)
        tensors.update(optim_tensors)
        tensors[RNG + "torch"] = torch.get_rng_state()
    text = json.dumps(meta)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"metakit": text}))
    atomic_write(
        path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2))
    )


def read_meta(path: Path) -> dict[str, Any]:
    try:
        with safe_open(path, "pt") as f:
            return json.loads((f.metadata() or {})["metakit"])
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except (SafetensorError, KeyError, ValueError, OSError) as e:
        raise CheckpointError(
            f"checkpoint {path} is unreadable or not a metakit checkpoint ({e})"
        ) from None


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A checkpoint's metadata and tensors, or a CheckpointError that says what is wrong."""
    meta = read_meta(path)
    try:
        return meta, load_file(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({e})") from None


def load_module(
    path: Path, module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, what: str
) -> None:
    """Load the tensors under `prefix` into `module`, or say the checkpoint does not fit it."""
    weights = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path} does not fit this {what}; was it trained with another config? ({e})"
        ) from None


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = False,
) -> dict[str, Any]:
    """Load weights (and optimizer/RNG state when given) into place; return the metadata."""
    meta, tensors = read_checkpoint(path)
    load_module(path, model, tensors, MODEL, "model")
    if optimizer is not None:
        if "optimizer" not in meta:
            raise CheckpointError(f"checkpoint {path} has no optimizer state to resume from")
        restore_optimizer(optimizer, tensors, meta["optimizer"], OPTIM)
    if restore_rng and RNG + "torch" in tensors:
        torch.set_rng_state(tensors[RNG + "torch"])
    return meta


def save_state(
    path: Path,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
    meta: dict[str, Any],
) -> None:
    """One atomic file for a run with several models, optimizers and random streams (a search:
    controller, shared weights, their optimizers, the sampling and data streams)."""
    tensors: dict[str, torch.Tensor] = {}
    meta = {**meta, "optimizers": {}}
    for name, module in modules.items():
        for k, v in module.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().cpu().contiguous()
    for name, optimizer in optimizers.items():
        optim_tensors, meta["optimizers"][name] = optimizer_tensors(optimizer, f"{OPTIM}{name}.")
        tensors.update(optim_tensors)
    for name, generator in generators.items():
        tensors[f"{RNG}{name}"] = generator.get_state()
    text = json.dumps(meta)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"metakit": text}))


def load_state(
    path: Path,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    generators: dict[str, torch.Generator] | None = None,
) -> dict[str, Any]:
    """Inverse of `save_state`: restores in place what is given; returns the metadata."""
    meta, tensors = read_checkpoint(path)
    for name, module in modules.items():
        load_module(path, module, tensors, f"{name}.", name)
    for name, optimizer in (optimizers or {}).items():
        restore_optimizer(optimizer, tensors, meta["optimizers"][name], f"{OPTIM}{name}.")
    for name, generator in (generators or {}).items():
        generator.set_state(tensors[f"{RNG}{name}"])
    return meta
