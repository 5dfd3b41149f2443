"""Learning to design, part 2: the expression grammar, PowerSign / AddSign, Swish, and the
optimizer and activation searches."""

import io
import json
import math

import pytest
import torch
from typer.testing import CliRunner

from metakit import create_backbone
from metakit.cli import app
from metakit.errors import ConfigError
from metakit.functional.optim import AddSign, PowerSign, RuleOptimizer
from metakit.functional.rules import addsign, internal_decay, powersign
from metakit.models.activations import ExpressionActivation, Swish
from metakit.search import activation as activation_child
from metakit.search import optimizer as optimizer_child
from metakit.search.expression_search import Evaluator, load_expression_config, search_expressions
from metakit.search.grammar import activation_grammar, optimizer_grammar
from metakit.search.optimizer import SIGN_RULES
from metakit.search.report import search_report
from tests.test_search import synthetic_data

POWERSIGN, ADDSIGN = SIGN_RULES["powersign"], SIGN_RULES["addsign"]


def quadratic_steps(rule, steps=25, seed=0):
    """Updates of `rule` on a fixed stream of noisy gradients of a small quadratic."""
    gen = torch.Generator().manual_seed(seed)
    params = {"w": torch.randn(6, generator=gen), "b": torch.randn(3, generator=gen)}
    state = rule.init(params)
    out = []
    for _ in range(steps):
        grads = {k: 2 * p + 0.3 * torch.randn(p.shape, generator=gen) for k, p in params.items()}
        updates, state = rule.update(grads, state, params)
        params = {k: p + updates[k] for k, p in params.items()}
        out.append(updates)
    return out


@pytest.mark.parametrize(("tokens", "hand"), [(POWERSIGN, powersign), (ADDSIGN, addsign)])
def test_sign_rules_built_from_tokens_equal_the_hand_written_rules(tokens, hand):
    grammar = optimizer_grammar(depth=3)
    expression = grammar.expression(grammar.tokens(*tokens))
    compiled = optimizer_child.expression_rule(expression, 0.05)
    ours, theirs = quadratic_steps(compiled), quadratic_steps(hand(0.05))
    for a, b in zip(ours, theirs, strict=True):
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-7), k
    assert "sign(g)·sign(m̂)" in expression.formula()


def test_swish_built_from_tokens_equals_x_sigmoid_beta_x():
    grammar = activation_grammar(depth=1)
    expression = grammar.expression(grammar.tokens(("x", "x", "beta_x", "x", "sigmoid_mul")))
    assert expression.formula() == "σ(βx)·x"
    x = torch.linspace(-5, 5, 41)
    for beta in (0.5, 1.0, 2.3):
        act = ExpressionActivation(expression, beta)
        assert torch.allclose(act(x), x * torch.sigmoid(beta * x), atol=1e-7)
        assert torch.allclose(act(x), Swish(beta)(x), atol=1e-7)
    act(x).sum().backward()
    assert act.beta.grad is not None  # beta is learned


def test_swish_distance_tells_close_relatives_from_relu():
    a = activation_grammar(depth=1)
    dist = {
        name: activation_child.swish_distance(a.expression(a.tokens(("x", "x", *parts))))
        for name, parts in {
            "swish": ("beta_x", "x", "sigmoid_mul"),
            "x·σ(x)": ("x", "sigmoid", "mul"),
            "relu": ("relu", "relu", "max"),
            "tanh·relu": ("tanh", "relu", "mul"),
            "identity": ("x", "x", "max"),
            "-swish": ("x", "neg", "sigmoid_mul"),  # σ(x)·-x
            "min(x, 0)": ("min0", "min0", "max"),  # -relu(-x)
        }.items()
    }
    gelu = activation_child.swish_distance(lambda d, b: torch.nn.functional.gelu(d["x"]))
    assert dist["swish"] < 1e-6 and dist["x·σ(x)"] < 1e-6 and gelu < 0.03
    assert dist["-swish"] < 1e-6
    assert min(dist["relu"], dist["tanh·relu"], dist["identity"]) > activation_child.SWISH_LIKE
    assert dist["min(x, 0)"] == pytest.approx(dist["relu"])
    assert 0.13 < dist["relu"] < 0.15


def test_invalid_expressions_are_rejected_with_a_reason():
    act = activation_grammar(depth=2)
    evaluate = Evaluator(
        load_expression_config("activation", overrides=["depth=2"]), task=None
    )  # checks run before any training
    exploding = act.expression(act.tokens(("x", "x", "cube", "x", "max"), ("exp", "x", "x", "mul")))
    assert "not finite" in evaluate(exploding)["invalid"]
    constant = act.expression(act.tokens(("x", "x", "x", "x", "sub"), ("x", "x", "x", "mul")))
    assert "constant" in evaluate(constant)["invalid"]
    opt = optimizer_grammar(depth=1)
    rule_eval = Evaluator(load_expression_config("optimizer", overrides=["depth=1"]), task=None)
    assert (
        "constant" in rule_eval(opt.expression(opt.tokens(("g", "g", "x", "x", "sub"))))["invalid"]
    )
    nan = opt.expression(opt.tokens(("g", "g", "x", "x", "pow")))  # g^g: NaN for g < 0
    assert "not finite" in rule_eval(nan)["invalid"]
    with pytest.raises(ConfigError, match="is not a choice"):
        opt.tokens(("g", "g", "x", "x", "power_of_ten"))
    with pytest.raises(ConfigError, match="target"):
        load_expression_config("optimizer", overrides=["target=loss"])


@pytest.mark.parametrize(
    "make",
    [
        lambda p: PowerSign(p, lr=0.05),
        lambda p: AddSign(p, lr=0.05, decay="linear", decay_steps=60),
    ],
)
def test_shipped_sign_optimizers_train_and_survive_save_load(make):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x, y = torch.randn(64, 5), torch.randn(64, 1)
    opt = make(model.parameters())
    start = torch.nn.functional.mse_loss(model(x), y).item()
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    assert torch.nn.functional.mse_loss(model(x), y).item() < 0.7 * start
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    clone = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    clone.load_state_dict(saved["model"])
    other = make(clone.parameters())
    other.load_state_dict(saved["opt"])
    for m, o in ((model, opt), (clone, other)):  # one more step: identical trajectories
        o.zero_grad()
        torch.nn.functional.mse_loss(m(x), y).backward()
        o.step()
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(a, b)
    assert isinstance(opt, RuleOptimizer)


def test_internal_decays():
    assert internal_decay("none", 0)(10) == 1.0
    linear = internal_decay("linear", 100)
    assert linear(0) == 1.0 and linear(50) == 0.5 and linear(100) == 0.0
    cyc = internal_decay("cyclical", 100, periods=2)
    assert cyc(0) == 1.0 and abs(cyc(25)) < 1e-12 and abs(cyc(50) - 1) < 1e-12
    restart = internal_decay("restart", 100, periods=2)
    assert restart(0) == 1.0 and abs(restart(25) - 0.5) < 1e-12 and restart(50) == 1.0
    with pytest.raises(ConfigError, match="decay_steps"):
        powersign(0.1, decay="linear")
    # once the decay reaches 0, PowerSign is plain SGD: alpha^0 = 1
    steps = quadratic_steps(powersign(0.1, decay="linear", decay_steps=1), steps=3)
    ref = quadratic_steps(powersign(0.1), steps=1)  # same first gradient, f(0) = 1
    assert torch.allclose(steps[0]["w"], ref[0]["w"])
    assert math.isclose(internal_decay("linear", 1)(2), 0.0)


def test_backbones_accept_searched_activations():
    bb = create_backbone("conv4", activation="swish", hidden=8)
    kinds = [type(m).__name__ for m in bb.features[0]]
    assert kinds == ["PatchConv2d", "BatchNorm2d", "Swish", "MaxPool2d"]  # act before the pool
    assert bb.embed(torch.rand(2, 1, 28, 28)).shape == (2, 8)
    assert sum(isinstance(m, Swish) for m in bb.modules()) == 4  # one learnable beta per block
    mlp = create_backbone("mlp", in_features=4, activation="gelu", num_classes=2)
    assert mlp(torch.randn(3, 4)).shape == (3, 2)
    with pytest.raises(ConfigError, match="unknown activation"):
        create_backbone("mlp", in_features=4, activation="mish")


def test_child_tasks_reward_good_designs_above_bad_ones():
    data = synthetic_data(n=600)
    task = optimizer_child.ChildTask.from_data(data, 200, 100)
    g = optimizer_grammar(depth=1)
    sgd = g.expression(g.tokens(("g", "g", "x", "x", "keep")))
    ascent = g.expression(g.tokens(("g", "g", "neg", "x", "keep")))
    good, lr = optimizer_child.optimizer_reward(sgd, task, [0.01, 0.1, 1.0], steps=60, seed=0)
    bad, _ = optimizer_child.optimizer_reward(ascent, task, [0.01, 0.1, 1.0], steps=60, seed=0)
    assert good > 0.6 and good > bad + 0.2 and lr in (0.01, 0.1, 1.0)
    a = activation_grammar(depth=1)
    relu = a.expression(a.tokens(("x", "x", "relu", "relu", "max")))
    flat = a.expression(a.tokens(("x", "x", "gauss", "gauss", "max")))  # exp(-x²): even, saturating
    r_good = activation_child.activation_reward(relu, task, steps=60, seed=0)
    assert r_good > 0.6
    assert r_good >= activation_child.activation_reward(flat, task, steps=60, seed=0)


def test_activation_child_needs_a_nonlinearity():
    """After global pooling a linear network sees only the mean of linear filters of an image:
    two classes of zero-mean noise that differ in contrast alone defeat the identity, not ReLU."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(2, (400,), generator=g)
    x = torch.randn(400, 1, 12, 12, generator=g) * (1 + 2 * y.float())[:, None, None, None]
    task = optimizer_child.ChildTask(x[:200].flatten(1), y[:200], x[200:].flatten(1), y[200:], 2,
                                     (1, 12, 12))  # fmt: skip
    a = activation_grammar(depth=1)
    relu = a.expression(a.tokens(("x", "x", "relu", "relu", "max")))
    identity = a.expression(a.tokens(("x", "x", "x", "x", "max")))
    r_relu = activation_child.activation_reward(relu, task, steps=40, seed=0)
    r_identity = activation_child.activation_reward(identity, task, steps=40, seed=0)
    assert r_relu > 0.9 and r_identity < 0.75, (r_relu, r_identity)


def test_expression_config_defaults_per_target():
    opt, act = (load_expression_config(t) for t in ("optimizer", "activation"))
    assert (opt.steps, opt.val, opt.grammar().depth) == (50, 1000, 3)
    assert (act.steps, act.val, act.grammar().depth) == (200, 2000, 1)
    assert load_expression_config("activation", overrides=["child_val=300"]).val == 300
    with pytest.raises(ConfigError, match="child_val must lie in"):
        load_expression_config("activation", overrides=["child_val=5000"])


TINY = [
    "iterations=4", "batch=3", "child_steps=5", "child_train=100", "child_val=50", "budget=0",
]  # fmt: skip


@pytest.mark.parametrize("target", ["optimizer", "activation"])
def test_expression_search_resume_equals_an_uninterrupted_search(tmp_path, monkeypatch, target):
    data = synthetic_data()
    full = search_expressions(
        load_expression_config(target, overrides=TINY), tmp_path / "full", progress=False, data=data
    )
    calls = {"n": 0}
    original = Evaluator.__call__

    def crash(self, expression):
        calls["n"] += 1
        if calls["n"] == 7:  # in the third iteration
            raise RuntimeError("simulated crash")
        return original(self, expression)

    monkeypatch.setattr(Evaluator, "__call__", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        search_expressions(
            load_expression_config(target, overrides=TINY),
            tmp_path / "cut",
            progress=False,
            data=data,
        )
    monkeypatch.setattr(Evaluator, "__call__", original)
    resumed = search_expressions(
        load_expression_config(target, overrides=TINY), tmp_path / "cut", resume=True,
        progress=False, data=data,
    )  # fmt: skip
    strip = {"search_seconds"}
    assert {k: v for k, v in full.items() if k not in strip} == {
        k: v for k, v in resumed.items() if k not in strip
    }
    history = [(tmp_path / n / "history.jsonl").read_text() for n in ("full", "cut")]
    assert history[0] == history[1] and len(history[0].splitlines()) == 12
    from safetensors.torch import load_file

    a, b = (load_file(tmp_path / n / "checkpoints" / "last.safetensors") for n in ("full", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert full["top"] and all("design" in t for t in full["top"])
    report = search_report(tmp_path / "full")
    assert report["top"][0]["design"] == full["top"][0]["design"]
    if target == "activation":
        assert all(t["swish_distance"] >= 0 for t in full["top"])
        assert "Closest to Swish" in (tmp_path / "full" / "report.md").read_text()


@pytest.mark.slow
def test_cli_optimizer_search_on_fashion_mnist(tmp_path):
    runner = CliRunner()
    out = tmp_path / "opt"
    args = ["search", "optimizer", "--out", str(out), "--budget", "0", "--no-progress"]
    for item in ["iterations=2", "batch=2", "child_steps=20", "child_train=500", "val_images=1000"]:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["evaluations"] == 4 and summary["target"] == "optimizer"
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0
    assert (out / "reward.png").exists()
