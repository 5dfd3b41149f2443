"""The interface every algorithm shares, so trainer, evaluator, CLI and tests treat them alike."""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from metakit.data.episode import Episode
from metakit.models.backbone import Backbone

TaskState = Any  # what `adapt` returns: prototypes, adapted parameters, a memory, ...


class Algorithm(nn.Module):
    """A few-shot learner: `adapt` to a support set, then score queries with `logits`.

    `meta_loss` is the training objective on an episode (or a batch of episodes with a leading
    task dimension); its default adapts and scores each task and averages cross-entropy.
    """

    name: ClassVar[str] = ""
    #: gradient-based methods need autograd at test time to adapt; metric methods do not.
    needs_grad_to_adapt: ClassVar[bool] = False
    #: the kinds of task it learns; those beyond classification take a `task` option.
    tasks: ClassVar[tuple[str, ...]] = ("classification",)

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> TaskState:
        raise NotImplementedError

    def logits(self, state: TaskState, query_x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def task_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and query accuracy of one (unbatched) episode."""
        state = self.adapt(episode.support_x, episode.support_y)
        logits = self.logits(state, episode.query_x)
        return F.cross_entropy(logits, episode.query_y), accuracy(logits, episode.query_y)

    def meta_loss(self, batch: Episode) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean loss over the tasks of `batch`, and metrics (`loss`, `accuracy`) as floats."""
        losses, accs = zip(*(self.task_loss(task) for task in batch.tasks()), strict=False)
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.item(), "accuracy": torch.stack(accs).mean().item()}

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Class probabilities from the output of `logits` (softmax unless a method scores
        classes on another scale, such as relation scores in [0, 1])."""
        return scores.softmax(-1)

    def inference(self) -> contextlib.AbstractContextManager[Any]:
        """The autograd mode for evaluation: no graph unless adaptation itself needs gradients."""
        return torch.enable_grad() if self.needs_grad_to_adapt else torch.inference_mode()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Plain features of the backbone, for users who want the embedding itself."""
        return self.backbone.embed(x)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=-1) == labels).float().mean()
