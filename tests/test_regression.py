"""Sinusoid meta-regression end to end: a short MAML run learns; eval, report and Learner agree."""

import json

import pytest
import torch
from typer.testing import CliRunner

from metakit.cli import app
from metakit.config import load_config
from metakit.engine.build import build_dataset
from metakit.engine.trainer import train
from metakit.errors import ConfigError
from metakit.learner import load

runner = CliRunner()
SHORT = [
    "device=cpu",
    "train.episodes=3000",
    "train.meta_batch=10",
    "train.lr=0.002",
    "train.val_every=1500",
    "train.val_episodes=50",
]


@pytest.fixture(scope="module")
def maml_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("maml-sinusoid")
    summary = train(load_config("maml-sinusoid-5shot", SHORT), out, progress=False)
    return out, summary


def test_short_maml_run_fits_new_sinusoids(maml_run):
    out, summary = maml_run
    assert summary["task"] == "regression" and summary["best_val_mse"] > 0
    result = runner.invoke(app, ["eval", str(out), "--json", "--episodes", "200"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["task"] == "regression" and row["steps"] == [1, 5, 10]
    assert row["mse"][-1] < 1.0, row
    assert row["mse"][0] > row["mse"][-1]  # more adaptation steps fit better
    assert all(c > 0 for c in row["ci95"])


def test_learner_adapts_exactly_as_the_evaluator(maml_run):
    out, _ = maml_run
    learner = load(out)
    config = load_config("maml-sinusoid-5shot")
    ep = build_dataset(config).sampler("test", 1, 5, 20, seed=0).sample(0)
    pred = learner.fit(ep.support_x.squeeze(1).tolist(), ep.support_y.squeeze(1)).predict(
        ep.query_x
    )
    algo = learner.algorithm
    with algo.inference():
        direct = algo.logits(algo.adapt(ep.support_x, ep.support_y), ep.query_x)
    assert pred.shape == (20, 1)
    assert torch.allclose(pred, direct.detach(), atol=1e-6)
    with pytest.raises(Exception, match="no class probabilities"):
        learner.predict_proba(ep.query_x)


def test_report_draws_a_png(maml_run, tmp_path):
    out, _ = maml_run
    png = tmp_path / "fig.png"
    result = runner.invoke(app, ["report", str(out), str(out), "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tuned = runner.invoke(
        app, ["report", str(out), "--out", str(png), "--set", "0:algorithm.test_inner_lr=0.02"]
    )
    assert tuned.exit_code == 0, tuned.output
    wrong = runner.invoke(app, ["report", str(out), "--set", "3:algorithm.test_inner_lr=0.02"])
    assert wrong.exit_code == 2 and "run index" in wrong.output


def test_eval_overrides_only_test_time_settings(maml_run):
    out, _ = maml_run
    args = ["eval", str(out), "--json", "--episodes", "20", "--adapt-steps", "10"]
    slow = runner.invoke(app, [*args, "--set", "algorithm.test_inner_lr=0.0001"])
    fast = runner.invoke(app, args)
    assert slow.exit_code == 0 and fast.exit_code == 0
    mse_slow = json.loads(slow.stdout.strip().splitlines()[-1])["mse"][0]
    mse_fast = json.loads(fast.stdout.strip().splitlines()[-1])["mse"][0]
    assert mse_slow != mse_fast
    bad = runner.invoke(app, [*args, "--set", "backbone.hidden=[8]"])
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError)


def test_classification_only_algorithm_on_regression_data_is_clear(tmp_path):
    config = load_config("maml-sinusoid-5shot", ["algorithm.name=protonet"])
    config.algorithm = {"name": "protonet"}
    with pytest.raises(ConfigError, match="poses regression tasks; use one of: maml"):
        train(config, tmp_path, progress=False)


def test_pretrained_baseline_trains_jointly(tmp_path):
    config = load_config(
        "pretrained-sinusoid-5shot",
        ["device=cpu", "train.episodes=200", "train.val_every=200", "train.val_episodes=20"],
    )
    summary = train(config, tmp_path, progress=False)
    # the zero function scores E[A^2]/2 = 4.25; joint training and fine-tuning do better
    assert summary["best_val_mse"] < 4.25
