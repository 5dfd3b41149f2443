"""Any `UpdateRule` as a `torch.optim.Optimizer`, so a plain `nn.Module` trains with it.

`RuleOptimizer(model.parameters(), momentum(0.1))` behaves like `torch.optim.SGD(..., lr=0.1,
momentum=0.9)`: `zero_grad()`, `backward()`, `step()`. The rule's state (any nesting of tuples,
dicts, tensors and numbers) is flattened into the optimizer's `state_dict`, so it round-trips
through `torch.save` / `torch.load(weights_only=True)` and resumes exactly.
A parameter whose `.grad` is None in a step is given a zero gradient (the rule's state is kept
per parameter, so every parameter takes part in every step). Learning-rate schedulers that
write `param_groups[i]["lr"]` do not apply: the rate is part of the rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from metakit.errors import CheckpointError, ConfigError
from metakit.functional.rules import Params, UpdateRule


class RuleOptimizer(torch.optim.Optimizer):
    """Steps the parameters with `rule`; parameters are keyed by their position."""

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict], rule: UpdateRule) -> None:
        super().__init__(params, defaults={})
        if not isinstance(rule, UpdateRule):
            raise ConfigError(f"RuleOptimizer needs an UpdateRule, got {type(rule).__name__}")
        self.rule = rule
        self.rule_state = rule.init(self._values())

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _values(self) -> Params:
        return {str(i): p.detach() for i, p in enumerate(self._params())}

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self._params()
        grads = {
            str(i): (p.grad if p.grad is not None else torch.zeros_like(p))
            for i, p in enumerate(params)
        }
        if self.rule.uses_loss:
            if loss is None:
                raise ConfigError(
                    "this rule reads the loss: call step(closure) with a closure that returns it"
                )
            updates, self.rule_state = self.rule.update(
                grads, self.rule_state, self._values(), loss.detach()
            )
        else:
            updates, self.rule_state = self.rule.update(grads, self.rule_state, self._values())
        for i, p in enumerate(params):
            p.add_(updates[str(i)])
        return loss

    def state_dict(self) -> dict[str, Any]:
        leaves, _ = tree_flatten(self.rule_state)
        return {
            "state": {i: {"value": leaf} for i, leaf in enumerate(leaves)},
            "param_groups": [
                {k: v for k, v in g.items() if k != "params"} | {"params": len(g["params"])}
                for g in self.param_groups
            ],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _, spec = tree_flatten(self.rule.init(self._values()))
        state = state_dict.get("state", {})
        leaves = [state[i]["value"] for i in sorted(state, key=int)]
        if len(leaves) != spec.num_leaves:
            raise CheckpointError(
                f"optimizer state has {len(leaves)} entries, this rule on these parameters "
                f"expects {spec.num_leaves}; was it saved with another rule or model?"
            )
        self.rule_state = tree_unflatten(leaves, spec)


class PowerSign(RuleOptimizer):
    """`torch.optim`-style PowerSign (see `metakit.functional.rules.powersign`)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-2, **options: Any) -> None:
        from metakit.functional.rules import powersign

        super().__init__(params, powersign(lr, **options))


class AddSign(RuleOptimizer):
    """`torch.optim`-style AddSign (see `metakit.functional.rules.addsign`)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-2, **options: Any) -> None:
        from metakit.functional.rules import addsign

        super().__init__(params, addsign(lr, **options))
