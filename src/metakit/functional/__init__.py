"""Pure-function helpers over parameter dicts (torch.func): the inner loop of gradient methods."""

from metakit.functional.adapt import (
    Params,
    adapt,
    adapt_batches,
    batched_adapt_loss,
    query_forward,
    split_state,
    task_query_loss,
)
from metakit.functional.rules import UpdateRule, adam, make_rule, sgd

__all__ = [
    "Params",
    "UpdateRule",
    "adam",
    "adapt",
    "adapt_batches",
    "batched_adapt_loss",
    "make_rule",
    "query_forward",
    "sgd",
    "split_state",
    "task_query_loss",
]
