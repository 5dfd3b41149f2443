"""The learned LSTM optimizer: coordinatewise invariances, meta-training on quadratics, the
torch.optim face of a trained run, resume, and the CLI."""

import contextlib
import itertools
import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import metakit
from metakit.cli import app
from metakit.errors import ConfigError
from metakit.functional.learned import LSTMOptimizer
from metakit.l2o.evaluate import draw, run_rule
from metakit.l2o.problems import QuadraticBatch, QuadraticFamily
from metakit.l2o.train import (
    L2OConfig,
    L2OEvalConfig,
    L2OTrainConfig,
    load_trained,
    meta_lr,
    train_l2o,
    truncated_meta_loss,
)


def grads_and_params():
    torch.manual_seed(0)
    grads = {"a": torch.randn(3, 4), "b": torch.randn(5) * 1e-6, "c": torch.zeros(2)}
    return grads, {k: torch.zeros_like(g) for k, g in grads.items()}


def test_lstm_update_ignores_parameter_order_and_equals_one_coordinate_at_a_time():
    torch.manual_seed(1)
    rule = LSTMOptimizer(hidden=8).rule()
    grads, params = grads_and_params()
    state = rule.init(params)
    for _ in range(3):  # a few steps, so the hidden state matters
        updates, state = rule.update(grads, state, params)
    order = ["c", "a", "b"]
    state_r = rule.init({k: params[k] for k in order})
    for _ in range(3):
        reordered, state_r = rule.update(
            {k: grads[k] for k in order}, state_r, {k: params[k] for k in order}
        )
    for k in grads:
        assert torch.allclose(updates[k], reordered[k], atol=1e-7), k
    flat = torch.cat([g.reshape(-1) for g in grads.values()])
    singles = []
    for i in range(flat.numel()):  # the reference: one coordinate per call
        one = {"x": flat[i : i + 1]}
        s = rule.init(one)
        for _ in range(3):
            u, s = rule.update(one, s, one)
        singles.append(u["x"])
    assert torch.allclose(torch.cat(singles), torch.cat([u.reshape(-1) for u in updates.values()]))


def tiny_config(**train):
    return L2OConfig(
        name="tiny-l2o",
        seed=0,
        problem={"name": "quadratic", "dim": 10},
        optimizer={"hidden": 20},
        train=L2OTrainConfig(
            **{
                "iterations": 40,
                "problems": 16,
                "horizon": 40,
                "unroll": 20,
                "lr": 3e-3,
                "val_every": 20,
                "val_problems": 16,
                **train,
            }
        ),
        eval=L2OEvalConfig(problems=32, steps=40, tune_problems=8),
    )


def test_short_meta_training_lowers_held_out_final_loss(tmp_path):
    summary = train_l2o(tiny_config(), tmp_path / "run", progress=False)
    assert summary["iterations"] == 40
    trained, _ = load_trained(tmp_path / "run", "last")
    torch.manual_seed(0)
    untrained = LSTMOptimizer(hidden=20)
    problems = draw(QuadraticFamily(10), 64, 40, 0, "held-out")
    before = run_rule(untrained.rule(), problems, 40)[-1].mean()
    after = run_rule(trained.rule(), problems, 40)[-1].mean()
    start = run_rule(trained.rule(), problems, 0)[-1].mean()
    assert after < 0.5 * before and after < 0.1 * start


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_ends_exactly_as_an_uninterrupted_run(tmp_path, monkeypatch, schedule):
    opts = {"val_every": 2, "lr_schedule": schedule, "lr": 0.01}
    train_l2o(tiny_config(iterations=4, **opts), tmp_path / "full", progress=False)

    class StopAfterTwo(dict):  # an interrupt (Ctrl-C) arriving during the second iteration
        checks = 0

        def __getitem__(self, key):
            self.checks += 1
            return self.checks == 2

    @contextlib.contextmanager
    def interrupt_after_two():
        yield StopAfterTwo()

    with monkeypatch.context() as m:
        m.setattr("metakit.l2o.train.stop_on_interrupt", interrupt_after_two)
        with pytest.raises(KeyboardInterrupt, match="iteration 2"):
            train_l2o(tiny_config(iterations=4, **opts), tmp_path / "part", progress=False)
    train_l2o(tiny_config(iterations=4, **opts), tmp_path / "part", resume=True, progress=False)
    full, _ = load_trained(tmp_path / "full", "last")
    part, _ = load_trained(tmp_path / "part", "last")
    for a, b in zip(full.parameters(), part.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="already holds a run"):
        train_l2o(tiny_config(iterations=4), tmp_path / "full", progress=False)


def test_cosine_meta_lr_decays_from_lr_to_lr_min():
    t = L2OTrainConfig(iterations=100, lr=1e-3, lr_schedule="cosine", lr_min=1e-5)
    assert meta_lr(t, 0) == pytest.approx(1e-3)
    assert meta_lr(t, 50) == pytest.approx((1e-3 + 1e-5) / 2)
    assert meta_lr(t, 100) == pytest.approx(1e-5)
    rates = [meta_lr(t, i) for i in range(101)]
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert meta_lr(L2OTrainConfig(lr=1e-3), 77) == 1e-3
    bad = L2OConfig(train=L2OTrainConfig(lr_schedule="linear"))
    with pytest.raises(ConfigError, match="constant or cosine"):
        bad.validate()


@pytest.mark.parametrize("log", [False, True])
def test_meta_training_steps_each_problem_with_its_own_gradient(log):
    """A batch of problems is stepped as if each ran alone (as evaluation steps them)."""
    torch.manual_seed(0)
    net = LSTMOptimizer(hidden=8)
    batch = draw(QuadraticFamily(4), 3, 5, 0, "pairs")
    alone = QuadraticBatch(
        batch.weight[1:2], batch.target[1:2], {"theta": batch.params["theta"][1:2]}
    )

    def run(problems):
        params = {k: p.clone().requires_grad_() for k, p in problems.params.items()}
        state = net.rule().init(params)
        loss, params, _ = truncated_meta_loss(net, problems, params, state, 0, 5, log)
        return loss, params["theta"]

    _, together = run(batch)
    loss, theta = run(alone)
    assert torch.allclose(together[1:2], theta, atol=1e-6)
    curve = run_rule(net.rule(), alone, 5)[1:, 0]
    expected = (curve.log() if log else curve).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_compiled_meta_training_equals_eager(tmp_path):
    """`train.compile` only fuses the LSTM step: the trained weights match the eager run's."""
    train_l2o(tiny_config(iterations=2, val_every=2), tmp_path / "eager", progress=False)
    train_l2o(
        tiny_config(iterations=2, val_every=2, compile=True), tmp_path / "compiled", progress=False
    )
    eager, _ = load_trained(tmp_path / "eager", "last")
    compiled, _ = load_trained(tmp_path / "compiled", "last")
    for a, b in zip(eager.parameters(), compiled.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_as_optimizer_trains_a_module_and_its_state_survives_save_load(tmp_path):
    train_l2o(tiny_config(iterations=10, val_every=5), tmp_path / "run", progress=False)
    learned = metakit.load(tmp_path / "run")
    torch.manual_seed(0)
    model = nn.Linear(10, 1)
    x, y = torch.randn(64, 10), torch.randn(64, 1)

    def step(m, opt):
        opt.zero_grad()
        loss = nn.functional.mse_loss(m(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    opt = learned.as_optimizer(model.parameters())
    assert isinstance(opt, torch.optim.Optimizer)
    first = step(model, opt)
    for _ in range(4):
        step(model, opt)
    torch.save({"m": model.state_dict(), "o": opt.state_dict()}, tmp_path / "ckpt.pt")
    continued = [step(model, opt) for _ in range(5)]
    assert continued[-1] < first
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    again = nn.Linear(10, 1)
    again.load_state_dict(saved["m"])
    opt2 = metakit.load(tmp_path / "run").as_optimizer(again.parameters())
    opt2.load_state_dict(saved["o"])
    assert [step(again, opt2) for _ in range(5)] == pytest.approx(continued, abs=1e-6)


def test_cli_trains_and_evaluates_an_l2o_recipe(tmp_path):
    runner = CliRunner()
    recipe = tmp_path / "q.yaml"
    recipe.write_text(
        "kind: l2o\ndescription: tiny\nproblem: {name: quadratic, dim: 4}\n"
        "train: {iterations: 3, problems: 4, horizon: 10, unroll: 5, val_every: 3, "
        "val_problems: 4}\neval: {problems: 8, steps: 10, tune_problems: 4}\n"
    )
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(recipe), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["iterations"] == 3
    result = runner.invoke(app, ["eval", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["results"]) == {"learned", "sgd", "momentum", "nesterov", "rmsprop", "adam"}
    adam = report["results"]["adam"]
    assert adam["lr"] > 0 and len(adam["curve"]) == 11 and adam["final_ci95"] > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: l2o\nproblem: {name: quadratic}\ntrain: {horizon: 10, unroll: 3}\n")
    result = runner.invoke(app, ["train", str(bad), "--out", str(tmp_path / "b")])
    assert result.exit_code != 0 and "multiple of train.unroll" in str(result.exception)
