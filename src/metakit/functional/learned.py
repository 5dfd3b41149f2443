"""The learned optimizer of "Learning to learn by gradient descent by gradient descent"
(Andrychowicz et al. 2016): a two-layer LSTM applied to every coordinate of every parameter,
with shared weights, reading the preprocessed gradient and writing the update.

`LSTMOptimizer(...).rule()` is an `UpdateRule` like `sgd` or `adam`: its state is the LSTM's
(h, c) per coordinate, kept per parameter name. All coordinates of all parameters run as one
batch through the LSTM (never a Python loop over parameters), so the update of a coordinate
depends only on that coordinate's gradient history, whatever order the parameters come in.
"""

from __future__ import annotations

import torch
from torch import nn

from metakit.errors import ConfigError
from metakit.functional.gradients import preprocess_gradient
from metakit.functional.rules import Params, RuleState, UpdateRule


class LSTMOptimizer(nn.Module):
    """Coordinatewise LSTM update rule: update = output_scale * Linear(LSTM(prep(g)))."""

    def __init__(
        self,
        hidden: int = 20,
        layers: int = 2,
        preprocess: float = 10.0,
        output_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if hidden < 1 or layers < 1 or preprocess <= 0 or output_scale <= 0:
            raise ConfigError(
                "lstm optimizer needs hidden >= 1, layers >= 1, preprocess > 0, output_scale > 0"
            )
        self.hidden, self.layers = hidden, layers
        self.preprocess, self.output_scale = preprocess, output_scale
        self.cells = nn.ModuleList(
            nn.LSTMCell(2 if i == 0 else hidden, hidden) for i in range(layers)
        )
        self.out = nn.Linear(hidden, 1)

    def initial_state(self, params: Params) -> dict[str, torch.Tensor]:
        """Zero (h, c) of every layer, `[layers, 2, numel, hidden]` per parameter."""
        return {
            k: torch.zeros(self.layers, 2, p.numel(), self.hidden, dtype=p.dtype, device=p.device)
            for k, p in params.items()
        }

    def step(self, g: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Updates `[N]` and new state for a flat batch of gradient coordinates `[N]`."""
        x = preprocess_gradient(g, self.preprocess)
        new = []
        for i, cell in enumerate(self.cells):
            h, c = cell(x, (state[i, 0], state[i, 1]))
            new.append(torch.stack([h, c]))
            x = h
        return self.out(x).squeeze(-1) * self.output_scale, torch.stack(new)

    def rule(self) -> UpdateRule:
        """This network as an update rule (its parameters stay live: training it changes it)."""

        def init(params: Params) -> RuleState:
            return self.initial_state(params)

        def update(grads: Params, state: RuleState, params: Params) -> tuple[Params, RuleState]:
            keys = list(grads)
            sizes = [grads[k].numel() for k in keys]
            flat = torch.cat([grads[k].reshape(-1) for k in keys])
            updates, new = self.step(flat, torch.cat([state[k] for k in keys], dim=2))
            out = dict(zip(keys, updates.split(sizes), strict=True))
            new_state = dict(zip(keys, new.split(sizes, dim=2), strict=True))
            return {k: out[k].view_as(grads[k]) for k in keys}, new_state

        return UpdateRule(init, update)
