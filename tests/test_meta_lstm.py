"""Meta-LSTM (Ravi & Larochelle 2017): SGD as a special case of its gates, gradients into the
gates and the initialisation, and the gate formula against a hand computation."""

import math

import pytest
import torch
import torch.nn.functional as F

from metakit import create_backbone
from metakit.algorithms import MetaLSTM
from metakit.algorithms.meta_lstm import meta_lstm_rule
from metakit.data import TaskSampler
from metakit.functional import adapt, sgd
from metakit.functional.gradients import preprocess_gradient
from metakit.functional.rules import UpdateRule
from tests.conftest import synthetic_dataset


def tiny(**options):
    torch.manual_seed(0)
    backbone = create_backbone("conv4", image_size=8, hidden=8, depth=2)
    return MetaLSTM(backbone, ways=3, **options)


def episode():
    return TaskSampler(synthetic_dataset(classes=6, per_class=6, size=8), 3, 2, 2, seed=0).sample(0)


def test_gates_held_at_lr_and_one_equal_sgd():
    algo = tiny(inner_lr=0.1, inner_steps=3).double()
    with torch.no_grad():
        algo.gates["w_i"].zero_()
        algo.gates["w_f"].zero_()
        algo.gates["b_f"].fill_(50.0)  # sigmoid(50) == 1 in float64
    ep = episode()
    x = ep.support_x.double()
    state = algo.adapt(x, ep.support_y)
    params = {k: v.detach() for k, v in algo.backbone.named_parameters()}
    buffers = dict(algo.backbone.named_buffers())
    expected = adapt(
        algo.backbone,
        params,
        buffers,
        x,
        ep.support_y,
        F.cross_entropy,
        3,
        sgd(0.1),
        first_order=True,
    )
    for k, v in expected.items():
        assert torch.allclose(state.params[k], v, atol=1e-12), k


def test_rule_matches_the_gate_formula_by_hand():
    torch.manual_seed(0)
    gates = {
        "w_i": torch.randn(6),
        "b_i": torch.tensor(-3.0),
        "w_f": torch.randn(6),
        "b_f": torch.tensor(4.0),
    }
    rule = meta_lstm_rule(gates)
    assert isinstance(rule, UpdateRule) and rule.uses_loss
    theta, g, loss = torch.randn(4), torch.randn(4), torch.tensor(0.7)
    state = rule.init({"w": theta})
    updates, state = rule.update({"w": g}, state, {"w": theta}, loss)
    lf = torch.tensor([math.log(0.7) / 10, 1.0])
    gf = preprocess_gradient(g)
    x = torch.cat([gf, lf.expand(4, 2), theta[:, None], torch.zeros(4, 1)], -1)
    i = torch.sigmoid(x @ gates["w_i"] + gates["b_i"])
    f = torch.sigmoid(x @ gates["w_f"] + gates["b_f"])
    assert torch.allclose(theta + updates["w"], f * theta - i * g, atol=1e-6)
    assert torch.allclose(state["w"][0], i) and torch.allclose(state["w"][1], f)


def test_meta_gradient_reaches_gates_and_initialisation():
    algo = tiny(inner_steps=2)
    ep = episode()
    batch = TaskSampler(synthetic_dataset(classes=6, per_class=6, size=8), 3, 2, 2, seed=0).batch(
        0, 2
    )
    loss, metrics = algo.meta_loss(batch)
    loss.backward()
    assert math.isfinite(metrics["loss"])
    for name in ("w_i", "b_i", "w_f", "b_f"):
        assert algo.gates[name].grad is not None and algo.gates[name].grad.abs().sum() > 0, name
    assert all(p.grad is not None for p in algo.backbone.parameters())
    assert ep.support_x.shape[0] == 6


def test_a_loss_reading_rule_runs_as_an_optimizer_with_a_closure():
    from torch import nn

    from metakit.errors import ConfigError
    from metakit.functional.optim import RuleOptimizer

    gates = {
        "w_i": torch.zeros(6),
        "b_i": torch.tensor(math.log(0.1 / 0.9)),
        "w_f": torch.zeros(6),
        "b_f": torch.tensor(50.0),
    }
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    reference = nn.Linear(3, 1).double()
    reference.load_state_dict(model.state_dict())
    opt = RuleOptimizer(
        model.parameters(), meta_lstm_rule({k: v.double() for k, v in gates.items()})
    )
    sgd_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    for m, o in ((model, opt), (reference, sgd_opt)):
        for _ in range(3):

            def closure(m=m, o=o):
                o.zero_grad()
                loss = F.mse_loss(m(x), y)
                loss.backward()
                return loss

            o.step(closure)
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-12)
    with pytest.raises(ConfigError, match="closure"):
        opt.step()
