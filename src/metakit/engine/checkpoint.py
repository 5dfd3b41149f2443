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
        state = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, pstate in state["state"].items():
            for key, value in pstate.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{OPTIM}{idx}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(idx), {})[key] = value
        meta["optimizer"] = {"param_groups": state["param_groups"], "scalars": scalars}
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


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = False,
) -> dict[str, Any]:
    """Load weights (and optimizer/RNG state when given) into place; return the metadata."""
    meta = read_meta(path)
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({e})") from None
    weights = {k.removeprefix(MODEL): v for k, v in tensors.items() if k.startswith(MODEL)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model; was it trained with another config? ({e})"
        ) from None
    if optimizer is not None:
        if "optimizer" not in meta:
            raise CheckpointError(f"checkpoint {path} has no optimizer state to resume from")
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith(OPTIM):
                idx, name = key.removeprefix(OPTIM).split(".", 1)
                state.setdefault(int(idx), {})[name] = value
        for idx, scalars in meta["optimizer"]["scalars"].items():
            state.setdefault(int(idx), {}).update(scalars)
        optimizer.load_state_dict(
            {"state": state, "param_groups": meta["optimizer"]["param_groups"]}
        )
    if restore_rng and RNG + "torch" in tensors:
        torch.set_rng_state(tensors[RNG + "torch"])
    return meta
