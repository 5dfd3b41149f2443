"""The LSTM meta-learner of Ravi & Larochelle (2017): the learner's parameters are the cell
state of an LSTM whose gates are a learned learning rate and a learned shrinkage.

Per coordinate of every learner parameter, with the gradient and the loss preprocessed as in
Andrychowicz et al. (log-magnitude and sign, p = 10):
  i_t = sigmoid(W_I . [g~_t, L~_t, theta_{t-1}, i_{t-1}] + b_I)      (learning rate)
  f_t = sigmoid(W_F . [g~_t, L~_t, theta_{t-1}, f_{t-1}] + b_F)      (shrinkage)
  theta_t = f_t * theta_{t-1} - i_t * g_t
The gates are shared by all coordinates; the initial cell state theta_0 is the learned learner
initialisation. The gradients and losses enter as constants (the paper drops the gradients
through them), so the inner loop is `metakit.functional.adapt` with `first_order=True` and this
update rule: everything else (T steps on the support set, query loss, BatchNorm with batch
statistics, vmap or loop over tasks) is MAML's. With the gates held at i = lr and f = 1 it is
SGD at that rate (a test holds the two equal).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metakit.algorithms.maml import MAML
from metakit.errors import ConfigError
from metakit.functional.gradients import preprocess_gradient
from metakit.functional.rules import Params, RuleState, UpdateRule
from metakit.models.backbone import Backbone

FEATURES = 6  # g~ (2), L~ (2), theta, the gate's previous value


def meta_lstm_rule(gates: Params, p: float = 10.0) -> UpdateRule:
    """The Meta-LSTM update rule from gate weights `{w_i, b_i, w_f, b_f}` (`w_*`: [6])."""

    def init(params: Params) -> RuleState:
        return {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in params.items()}

    def update(
        grads: Params, state: RuleState, params: Params, loss: torch.Tensor
    ) -> tuple[Params, RuleState]:
        loss_features = preprocess_gradient(loss.reshape(1), p)[0]  # [2]
        updates, new = {}, {}
        for k, g in grads.items():
            theta = params[k]
            i_prev, f_prev = state[k]
            shared = [
                preprocess_gradient(g, p),
                loss_features.expand(*g.shape, 2),
                theta[..., None],
            ]
            i = torch.sigmoid(
                torch.cat([*shared, i_prev[..., None]], -1) @ gates["w_i"] + gates["b_i"]
            )
            f = torch.sigmoid(
                torch.cat([*shared, f_prev[..., None]], -1) @ gates["w_f"] + gates["b_f"]
            )
            updates[k] = (f - 1) * theta - i * g  # theta + update = f * theta - i * g
            new[k] = (i, f)
        return updates, new

    return UpdateRule(init, update, uses_loss=True)


class MetaLSTM(MAML):
    """MAML's episode loop with the learned Meta-LSTM update in place of SGD.

    `inner_lr` sets the initial learning-rate gate (b_I = logit(inner_lr)); the forget gate
    starts near 1 (b_F = `forget_bias`) and the gate weights near 0, so training starts from
    SGD at `inner_lr` and learns away from it. Test-time adaptation runs `test_inner_steps`
    steps of the same learned rule.
    """

    name = "meta_lstm"
    tasks = ("classification",)

    def __init__(
        self,
        backbone: Backbone,
        ways: int = 5,
        inner_lr: float = 0.1,
        inner_steps: int = 5,
        test_inner_steps: int | None = None,
        forget_bias: float = 5.0,
        preprocess: float = 10.0,
        bn: str = "transductive",
        vectorize: str = "auto",
    ) -> None:
        if not 0 < inner_lr < 1:
            raise ConfigError(
                f"meta_lstm inner_lr is the initial gate value, in (0, 1): {inner_lr}"
            )
        super().__init__(
            backbone,
            ways=ways,
            inner_lr=inner_lr,
            inner_steps=inner_steps,
            test_inner_steps=inner_steps if test_inner_steps is None else test_inner_steps,
            first_order=True,  # the paper's choice: no gradient through the learner's gradients
            bn=bn,  # type: ignore[arg-type]
            vectorize=vectorize,  # type: ignore[arg-type]
        )
        self.preprocess = preprocess
        self.gates = nn.ParameterDict(
            {
                "w_i": nn.Parameter(torch.empty(FEATURES).uniform_(-0.01, 0.01)),
                "b_i": nn.Parameter(torch.tensor(math.log(inner_lr / (1 - inner_lr)))),
                "w_f": nn.Parameter(torch.empty(FEATURES).uniform_(-0.01, 0.01)),
                "b_f": nn.Parameter(torch.tensor(float(forget_bias))),
            }
        )

    def meta_parameters(self) -> tuple[Params, Params]:
        return dict(self.backbone.named_parameters()), dict(self.gates.items())

    def inner_rule(self, test: bool = False) -> UpdateRule:
        gates = {k: v.detach() if test else v for k, v in self.gates.items()}
        return meta_lstm_rule(gates, self.preprocess)

    def rule_from(self, extra: Params) -> UpdateRule:
        return meta_lstm_rule(extra, self.preprocess)
