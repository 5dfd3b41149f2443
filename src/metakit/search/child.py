"""Image data and short supervised training for rewarding and retraining searched designs.

The official IDX files are decoded once (the dataset cache); a seeded validation split is cut
from the training images, so rewards and model selection never see the test split. Everything is
held as one normalised float tensor; minibatches are index draws from a `torch.Generator`, so a
run is reproducible and resumable from the generator's state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metakit.errors import DataError, TrainingError


@dataclass
class ImageData:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    name: str

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])


def load_image_data(
    name: str = "fashion-mnist", val_images: int = 5000, seed: int = 0, image_size: int = 28
) -> ImageData:
    """Train (minus a seeded validation split of `val_images`), validation and test tensors,
    normalised by the training images' mean and standard deviation."""
    from metakit.data.mnist import idx_dataset

    data = idx_dataset(name, image_size)
    missing = {"train", "test"} - set(data.splits)
    if missing:
        raise DataError(
            f"{name} needs its train and test files for a search; missing {sorted(missing)} under "
            f"the data root (fetch them with `metakit data fetch {name}`)"
        )
    train, test = data.split("train"), data.split("test")
    if not 0 < val_images < len(train):
        raise DataError(f"val_images must lie in 1..{len(train) - 1}, got {val_images}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_images], order[val_images:]
    x = train.images.float() / 255
    mean, std = x[train_idx].mean(), x[train_idx].std()

    def norm(t: torch.Tensor) -> torch.Tensor:
        return ((t.float() / 255) - mean) / std

    return ImageData(
        train_x=norm(train.images[train_idx]),
        train_y=train.labels[train_idx],
        val_x=norm(train.images[val_idx]),
        val_y=train.labels[val_idx],
        test_x=norm(test.images),
        test_y=test.labels,
        num_classes=train.num_classes,
        name=name,
    )


@torch.no_grad()
def accuracy(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1000,
) -> float:
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((forward(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum())
    return correct / len(x)


def ci95(p: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of an accuracy over `n` images."""
    return 1.96 * math.sqrt(max(p * (1 - p), 0.0) / n)


def minibatch(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    flip: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random minibatch (with replacement across steps); `flip` mirrors half of the images."""
    idx = torch.randint(len(x), (batch_size,), generator=generator)
    xb = x[idx]
    if flip:
        mirror = torch.rand(batch_size, generator=generator) < 0.5
        xb = torch.where(mirror[:, None, None, None], xb.flip(-1), xb)
    return xb, y[idx]


def classification_step(
    forward: Callable[[torch.Tensor], torch.Tensor],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    xb: torch.Tensor,
    yb: torch.Tensor,
    grad_clip: float = 5.0,
) -> tuple[float, float]:
    """One optimizer step of `model`'s parameters on the cross-entropy of `forward(xb)`; returns
    the loss and the batch accuracy. Parameters that `forward` did not use get no update."""
    logits = forward(xb)
    loss = F.cross_entropy(logits, yb)
    if not torch.isfinite(loss):
        raise TrainingError(f"the training loss became {float(loss)}; lower the learning rate")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item(), float((logits.argmax(-1) == yb).float().mean())
