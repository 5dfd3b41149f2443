"""Transfer learning: reuse a pretrained backbone on a new target task.

- `heads`: fit a new head (linear, cosine, nearest centroid) on frozen features;
- `finetune`: freeze the first N blocks, fine-tune the rest with discriminative learning rates;
- `learner`: `Transfer`, which adapts a backbone to each episode's support set by feature
  extraction, fine-tuning or training from scratch, with the common `Algorithm` interface so the
  evaluator and CLI score it like any few-shot method.

Pretraining itself is the registered `baseline` algorithm (`metakit train baseline-...`).
"""

from metakit.transfer.finetune import finetune, freeze_blocks, param_groups
from metakit.transfer.heads import CosineClassifier, fit_head, make_head
from metakit.transfer.learner import MODES, Transfer

__all__ = [
    "MODES",
    "CosineClassifier",
    "Transfer",
    "finetune",
    "fit_head",
    "freeze_blocks",
    "make_head",
    "param_groups",
]
