"""Functional update rules against torch.optim, and BatchNorm modes against hand computation."""

import copy

import pytest
import torch
from torch import nn

from metakit import create_backbone
from metakit.algorithms import MAML
from metakit.errors import CheckpointError, ConfigError
from metakit.functional import adam, adapt, sgd
from metakit.functional.optim import RuleOptimizer
from metakit.functional.rules import (
    RULES,
    add_decayed_weights,
    chain,
    make_rule,
    momentum,
    rmsprop,
    scale,
    scale_by_adam,
    sign,
    trace,
)
from metakit.models.norm import (
    BatchStatNorm,
    SupportBatchNorm,
    statistics_from_first,
    use_batch_statistics,
)


def quadratic_problem():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    return model, x, y


@pytest.mark.parametrize(
    ("rule", "make_opt"),
    [
        (adam(0.05, b1=0.0), lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.0, 0.999))),
        (adam(0.05), lambda p: torch.optim.Adam(p, lr=0.05)),
        (sgd(0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    ],
)
def test_rule_equals_torch_optim(rule, make_opt):
    model, x, y = quadratic_problem()
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    ours = adapt(model, start, {}, x, y, nn.functional.mse_loss, 7, rule)
    opt = make_opt(model.parameters())
    for _ in range(7):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    for k, p in model.named_parameters():
        assert torch.allclose(ours[k], p, atol=1e-12), k


def test_per_parameter_rates_scale_each_entry():
    model, x, y = quadratic_problem()
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    rates = {k: torch.rand_like(v) for k, v in start.items()}
    ours = adapt(model, start, {}, x, y, nn.functional.mse_loss, 1, rates)
    grads = torch.autograd.grad(nn.functional.mse_loss(model(x), y), list(model.parameters()))
    for (k, p), g in zip(start.items(), grads, strict=True):
        assert torch.allclose(ours[k], p - rates[k] * g, atol=1e-12), k


def test_invalid_rules_are_config_errors():
    with pytest.raises(ConfigError, match="positive"):
        sgd(-1.0)
    with pytest.raises(ConfigError, match="invalid adam"):
        adam(0.1, b1=1.5)


def test_support_batchnorm_uses_support_statistics_only():
    bn = nn.BatchNorm2d(3).double()
    nn.init.uniform_(bn.weight)
    nn.init.uniform_(bn.bias)
    use_batch_statistics(bn, "support")
    assert isinstance(bn, SupportBatchNorm)
    support = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    query = torch.randn(6, 3, 5, 5, dtype=torch.float64) * 3 + 1
    with statistics_from_first(4):
        out = bn(torch.cat([support, query]))
    mean = support.mean((0, 2, 3), keepdim=True)
    var = support.var((0, 2, 3), unbiased=False, keepdim=True)
    w, b = bn.weight.view(1, -1, 1, 1), bn.bias.view(1, -1, 1, 1)
    expected = (query - mean) / torch.sqrt(var + bn.eps) * w + b
    assert torch.allclose(out[4:], expected, atol=1e-10)
    assert torch.allclose(
        bn(support),
        nn.functional.batch_norm(support, None, None, bn.weight, bn.bias, True, 0.0, bn.eps),
        atol=1e-12,
    )


@pytest.mark.parametrize("bn", ["transductive", "support"])
def test_query_predictions_depend_on_other_queries_only_when_transductive(bn):
    torch.manual_seed(0)
    backbone = create_backbone("conv4", image_size=8, hidden=4, depth=2)
    algo = MAML(backbone, ways=2, inner_lr=0.1, bn=bn).eval()
    sx, sy = torch.randn(4, 1, 8, 8), torch.tensor([0, 0, 1, 1])
    queries = torch.randn(6, 1, 8, 8)
    with algo.inference():
        state = algo.adapt(sx, sy)
        alone = algo.logits(state, queries[:2])
        together = algo.logits(state, queries)[:2]
    same = torch.allclose(alone, together, atol=1e-5)
    assert same == (bn == "support")


@pytest.mark.parametrize("rows", [5, 40])  # primitive-op path and fused path
def test_batch_statistics_norm_equals_batchnorm_to_second_order(rows):
    """Both paths of BatchStatNorm give BatchNorm's values, gradients and MAML-style
    gradients of gradients."""
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(3, track_running_stats=False).double()
    nn.init.uniform_(reference.weight, -1, 1)
    nn.init.uniform_(reference.bias)
    bn = copy.deepcopy(reference)
    use_batch_statistics(bn, "transductive")
    assert isinstance(bn, BatchStatNorm)
    x = torch.randn(rows, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(rows, 3, 4, 4, dtype=torch.float64)

    def meta_gradient(module):  # type: ignore[no-untyped-def]
        out = module(x)
        inner = torch.autograd.grad(((out - target) ** 3).mean(), module.weight, create_graph=True)
        return out, *torch.autograd.grad((inner[0] ** 2).sum(), [x, module.weight, module.bias])

    for got, want in zip(meta_gradient(bn), meta_gradient(reference), strict=True):
        torch.testing.assert_close(got, want)


def run_torch(make_opt, steps: int = 7):
    model, x, y = quadratic_problem()
    opt = make_opt(model.parameters())
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return dict(model.named_parameters())


def run_rule(rule, steps: int = 7):
    model, x, y = quadratic_problem()
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    return adapt(model, start, {}, x, y, nn.functional.mse_loss, steps, rule)


@pytest.mark.parametrize(
    ("rule", "make_opt"),
    [
        (momentum(0.05), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
        (
            momentum(0.05, 0.8, nesterov=True),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True),
        ),
        (rmsprop(0.01), lambda p: torch.optim.RMSprop(p, lr=0.01)),
        (
            rmsprop(0.01, decay=0.9, centered=True),
            lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, centered=True),
        ),
        (chain(scale_by_adam(), scale(-0.05)), lambda p: torch.optim.Adam(p, lr=0.05)),
        (
            chain(add_decayed_weights(0.1), scale_by_adam(), scale(-0.05)),
            lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1),
        ),
        (
            chain(add_decayed_weights(0.01), trace(0.9), scale(-0.05)),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
        ),
    ],
)
def test_composed_rules_reproduce_torch_optim(rule, make_opt):
    ours, theirs = run_rule(rule), run_torch(make_opt)
    for k, p in theirs.items():
        assert torch.allclose(ours[k], p, atol=1e-10), k


def test_chained_adam_equals_adam_and_sign_is_signsgd():
    fast, chained = run_rule(adam(0.05)), run_rule(chain(scale_by_adam(), scale(-0.05)))
    for k in fast:
        assert torch.allclose(fast[k], chained[k], atol=1e-12)
    model, x, y = quadratic_problem()
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    one = adapt(model, start, {}, x, y, nn.functional.mse_loss, 1, chain(sign(), scale(-0.1)))
    grads = torch.autograd.grad(nn.functional.mse_loss(model(x), y), list(model.parameters()))
    for (k, p), g in zip(start.items(), grads, strict=True):
        assert torch.allclose(one[k], p - 0.1 * torch.sign(g)), k


@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_optimizer_trains_a_module_like_torch_optim(name):
    """The adapter steps an nn.Module with any rule; its trajectory equals the rule's own."""
    model, x, y = quadratic_problem()
    opt = RuleOptimizer(model.parameters(), make_rule(name, 0.01))
    for _ in range(7):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    expected = run_rule(make_rule(name, 0.01))
    for k, p in model.named_parameters():
        assert torch.allclose(p, expected[k], atol=1e-10), (name, k)


def test_rule_optimizer_state_survives_save_and_load(tmp_path):
    def steps(model, opt, n):
        model_x, model_y = quadratic_problem()[1:]
        for _ in range(n):
            opt.zero_grad()
            nn.functional.mse_loss(model(model_x), model_y).backward()
            opt.step()

    model, _, _ = quadratic_problem()
    reference = copy.deepcopy(model)
    opt = RuleOptimizer(model.parameters(), adam(0.05))
    steps(model, opt, 3)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "s.pt")
    ref_opt = RuleOptimizer(reference.parameters(), adam(0.05))
    steps(reference, ref_opt, 6)
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    resumed = quadratic_problem()[0]
    resumed.load_state_dict(saved["model"])
    opt2 = RuleOptimizer(resumed.parameters(), adam(0.05))
    opt2.load_state_dict(saved["opt"])
    steps(resumed, opt2, 3)
    for a, b in zip(resumed.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-12)
    with pytest.raises(CheckpointError, match="another rule"):
        RuleOptimizer(resumed.parameters(), sgd(0.1)).load_state_dict(saved["opt"])


def test_unknown_rule_lists_the_available_ones():
    with pytest.raises(ConfigError, match="available: sgd, momentum"):
        make_rule("adagrad", 0.1)
    with pytest.raises(ConfigError, match="decay"):
        trace(1.0)
