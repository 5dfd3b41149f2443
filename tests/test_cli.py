import json
import signal
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from metakit.cli import app
from metakit.engine.checkpoint import read_meta
from tests.conftest import needs_omniglot, tiny_config

runner = CliRunner()


def write_tiny(tmp_path, **train):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(**train).to_dict()))
    return path


def test_recipes_lists_shipped_recipes():
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0
    for name in ("protonet-omniglot-5w1s", "protonet-omniglot-20w5s"):
        assert name in result.output


def test_unknown_recipe_is_a_clean_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "metakit.cli", "train", "no-such-recipe", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no recipe named 'no-such-recipe'")
    assert "Traceback" not in proc.stderr


def test_eval_of_missing_run_is_a_clean_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "metakit.cli", "eval", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "is not a metakit run" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_omniglot
def test_train_then_eval_json(tmp_path):
    config = write_tiny(tmp_path, episodes=2)
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["train", str(config), "--out", str(run), "--no-progress", "--set", "train.episodes=3"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["steps"] == 3
    result = runner.invoke(
        app, ["eval", str(run), "--json", "--episodes", "7", "--ways", "3", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in ("accuracy", "ci95", "episodes", "ways", "shots", "queries", "split", "seconds"):
        assert key in out
    assert 0.0 <= out["accuracy"] <= 1.0 and 0.0 <= out["ci95"] <= 1.0
    assert (out["episodes"], out["ways"], out["shots"], out["split"]) == (7, 3, 1, "test")
    text = runner.invoke(app, ["eval", str(run), "--episodes", "3", "--no-progress"]).output
    assert "95% CI" in text


@needs_omniglot
def test_impossible_eval_request_is_clear(tmp_path):
    config = write_tiny(tmp_path, episodes=1)
    run = tmp_path / "run"
    assert (
        runner.invoke(app, ["train", str(config), "--out", str(run), "--no-progress"]).exit_code
        == 0
    )
    proc = subprocess.run(
        [sys.executable, "-m", "metakit.cli", "eval", str(run), "--shots", "15", "--queries", "10"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "need 25 examples per class" in proc.stderr


@needs_omniglot
def test_interrupt_saves_and_resume_continues(tmp_path):
    config = write_tiny(tmp_path, episodes=100000, val_every=100000)
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "metakit.cli",
        "train",
        str(config),
        "--out",
        str(run),
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (
        metrics.exists() and metrics.read_text().count("\n") >= 3
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "continue with --resume" in err and "Traceback" not in err
    step = read_meta(run / "checkpoints" / "last.safetensors")["step"]
    assert step >= 3
    result = runner.invoke(
        app,
        [
            "train",
            str(config),
            "--out",
            str(run),
            "--resume",
            "--no-progress",
            "--set",
            f"train.episodes={step + 2}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert read_meta(run / "checkpoints" / "last.safetensors")["step"] == step + 2


def test_data_info_without_data_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("METAKIT_DATA", str(tmp_path))
    result = runner.invoke(app, ["data", "info", "omniglot"])
    assert result.exit_code != 0
    assert "is missing" in str(result.exception) or "is missing" in result.output


@pytest.mark.parametrize("bad", ["train.ways=abc", "nonsense"])
def test_bad_set_is_clear(tmp_path, bad):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "metakit.cli",
            "train",
            "protonet-omniglot-5w1s",
            "--out",
            str(tmp_path / "r"),
            "--set",
            bad,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error:")


@needs_omniglot
@pytest.mark.parametrize("algorithm", ["mann", "metanet"])
def test_model_based_run_trains_evaluates_and_predicts(tmp_path, algorithm):
    """A MANN / MetaNet run goes through train, eval (MANN adds accuracy by instance) and
    `metakit.load(...).fit/predict` like any other algorithm."""
    import torch

    import metakit

    options = {"mann": "{name: mann, ways: 5, controller: 16, slots: 16, width: 8, heads: 2}",
               "metanet": "{name: metanet, ways: 5, pairs: 4}"}[algorithm]  # fmt: skip
    backbone = "{name: identity}" if algorithm == "mann" else "{name: conv4, hidden: 16}"
    run = tmp_path / "run"
    sets = ["--set", f"algorithm={options}", "--set", f"backbone={backbone}",
            "--set", "train.queries=4", "--set", "eval.queries=4"]  # fmt: skip
    result = runner.invoke(
        app,
        ["train", str(write_tiny(tmp_path, episodes=2)), "--out", str(run), "--no-progress", *sets],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["eval", str(run), "--json", "--episodes", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 <= out["accuracy"] <= 1
    if algorithm == "mann":
        assert set(out["instance_accuracy"]) == {"1", "2", "3", "4", "5", "10"}
        assert out["instance_accuracy"]["5"]["episodes"] == 4
        assert "10" in out["instance_accuracy"] and out["instance_accuracy"]["10"]["episodes"] == 0
    learner = metakit.load(run)
    x = torch.randint(0, 255, (6, 1, 28, 28), dtype=torch.uint8)
    labels = learner.fit(x[:3], ["a", "b", "c"]).predict(x[3:])
    assert len(labels) == 3 and set(labels) <= {"a", "b", "c"}
    assert torch.allclose(learner.predict_proba(x[3:]).sum(-1), torch.ones(3), atol=1e-5)
