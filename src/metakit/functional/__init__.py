"""Pure-function helpers over parameter dicts (torch.func): the inner loop of gradient methods."""

from metakit.functional.adapt import Params, adapt, batched_adapt_loss, split_state

__all__ = ["Params", "adapt", "batched_adapt_loss", "split_state"]
