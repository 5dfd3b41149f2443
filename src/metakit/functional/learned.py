"""The learned optimizer of "Learning to learn by gradient descent by gradient descent"
(Andrychowicz et al. 2016): a two-layer LSTM applied to every coordinate of every parameter,
with shared weights, reading the preprocessed gradient and writing the update.

`LSTMOptimizer(...).rule()` is an `UpdateRule` like `sgd` or `adam`: its state is the LSTM's
(h, c) per coordinate, kept per parameter name. All coordinates of all parameters run as one
batch through the LSTM (never a Python loop over parameters), so the update of a coordinate
depends only on that coordinate's gradient history, whatever order the parameters come in. The
state is one flat `[layers, 2, coordinates, hidden]` tensor in the order of the parameters the
rule was initialised on (gradients given in another order are matched by name).
"""

from __future__ import annotations

from typing import Any

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
        # one Linear over [input, h] per layer: the LSTM cell in a single matmul (faster on
        # tens of thousands of coordinates than nn.LSTMCell's two; same function)
        self.cells = nn.ModuleList(
            nn.Linear((2 if i == 0 else hidden) + hidden, 4 * hidden) for i in range(layers)
        )
        self.out = nn.Linear(hidden, 1)

    def initial_state(self, params: Params) -> dict[str, Any]:
        """Zero (h, c) of every layer for all coordinates, `[layers, 2, numel, hidden]`, in the
        order of `keys` (one flat tensor: no concatenation per step)."""
        numel = sum(p.numel() for p in params.values())
        p = next(iter(params.values()))
        hc = torch.zeros(self.layers, 2, numel, self.hidden, dtype=p.dtype, device=p.device)
        return {"keys": tuple(params), "sizes": tuple(p.numel() for p in params.values()), "hc": hc}

    def step(self, g: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Updates `[N]` and new state for a flat batch of gradient coordinates `[N]`."""
        x = preprocess_gradient(g, self.preprocess)
        new = []
        for i, cell in enumerate(self.cells):
            gates = cell(torch.cat([x, state[i, 0]], -1))
            in_gate, forget, cell_in, out_gate = gates.chunk(4, -1)
            c = torch.sigmoid(forget) * state[i, 1] + torch.sigmoid(in_gate) * torch.tanh(cell_in)
            x = torch.sigmoid(out_gate) * torch.tanh(c)
            new.append(torch.stack([x, c]))
        return self.out(x).squeeze(-1) * self.output_scale, torch.stack(new)

    def rule(self) -> UpdateRule:
        """This network as an update rule (its parameters stay live: training it changes it)."""

        def init(params: Params) -> RuleState:
            return self.initial_state(params)

        def update(grads: Params, state: RuleState, params: Params) -> tuple[Params, RuleState]:
            keys, sizes, hc = state["keys"], state["sizes"], state["hc"]
            if set(grads) != set(keys):
                raise ConfigError(
                    f"the learned optimizer's state covers {sorted(keys)}, got gradients for "
                    f"{sorted(grads)}; initialise the rule on the same parameters"
                )
            flat = torch.cat([grads[k].reshape(-1) for k in keys])  # the state's order
            updates, hc = self.step(flat, hc)
            out = dict(zip(keys, updates.split(list(sizes)), strict=True))
            return {k: out[k].view_as(g) for k, g in grads.items()}, {**state, "hc": hc}

        return UpdateRule(init, update)
