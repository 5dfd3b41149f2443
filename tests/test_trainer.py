import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from metakit.algorithms import ProtoNet
from metakit.config import load_config
from metakit.engine.checkpoint import read_meta
from metakit.engine.trainer import resume_config, train
from metakit.errors import ConfigError, TrainingError
from tests.conftest import needs_omniglot, tiny_config

pytestmark = needs_omniglot


def weights(run_dir):
    return load_file(run_dir / "checkpoints" / "last.safetensors")


def test_resume_equals_uninterrupted_run(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train(tiny_config(episodes=6), full, progress=False)
    train(tiny_config(episodes=3), part, progress=False)
    config = resume_config(part, ["train.episodes=6"])
    summary = train(config, part, resume=True, progress=False)
    assert summary["steps"] == 6
    a, b = weights(full), weights(part)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key

    def rows(d):
        return [
            r
            for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
            if r["split"] == "train"
        ]

    assert [r["loss"] for r in rows(full)] == [r["loss"] for r in rows(part)]


def test_run_directory_contents(tmp_path):
    train(tiny_config(episodes=2), tmp_path, progress=False)
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert cfg["seed"] == 3 and cfg["metakit_version"]
    meta = read_meta(tmp_path / "checkpoints" / "best.safetensors")
    assert meta["step"] == 2 and meta["seed"] == 3 and meta["preprocess"]["image_size"] == 28
    assert "optimizer" in meta and 0 <= meta["best_metric"] <= 1
    assert json.loads((tmp_path / "checkpoints" / "last.json").read_text())["step"] == 2
    assert list((tmp_path / "tb").iterdir()), "TensorBoard events are written"
    assert not list((tmp_path / "checkpoints").glob(".*tmp")), "no temporary files are left"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"train", "val"}


def test_existing_run_and_missing_resume_are_clear(tmp_path):
    train(tiny_config(episodes=1), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny_config(episodes=1), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(tiny_config(episodes=1), tmp_path / "b", resume=True, progress=False)
    with pytest.raises(ConfigError, match="cannot change train.lr when resuming"):
        resume_config(tmp_path / "a", ["train.lr=0.1"])


def test_nan_loss_stops_with_a_message(tmp_path, monkeypatch):
    original = ProtoNet.task_loss
    calls = {"n": 0}

    def flaky(self, episode):
        calls["n"] += 1
        loss, acc = original(self, episode)
        return (loss * float("nan") if calls["n"] >= 3 else loss), acc

    monkeypatch.setattr(ProtoNet, "task_loss", flaky)
    with pytest.raises(TrainingError, match=r"loss became nan at step 3.*checkpoint \(step 2\)"):
        train(tiny_config(episodes=5), tmp_path, progress=False)
    # the checkpoint from step 2 survives and the run can be resumed
    assert read_meta(tmp_path / "checkpoints" / "last.safetensors")["step"] == 2


def test_time_budget_stops_training_with_a_checkpoint(tmp_path):
    # a budget smaller than one step: exactly one step runs, then validate + checkpoint
    summary = train(tiny_config(episodes=50, minutes=1e-9), tmp_path, progress=False)
    assert summary["steps"] == 1 and summary["stopped_by"] == "minutes"
    assert read_meta(tmp_path / "checkpoints" / "last.safetensors")["step"] == 1
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "val"] == [1]
    assert train(tiny_config(episodes=2), tmp_path / "b", progress=False)["stopped_by"] == (
        "episodes"
    )
    with pytest.raises(ConfigError, match="train.minutes must be >= 0"):
        tiny_config(minutes=-1)


def test_bf16_precision_is_reproducible_and_keeps_fp32_weights(tmp_path):
    runs = {}
    for name, precision in [("a", "bf16"), ("b", "bf16"), ("c", "fp32")]:
        train(tiny_config(precision=precision), tmp_path / name, progress=False)
        runs[name] = weights(tmp_path / name)
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert any(not torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])  # autocast ran
    assert all(runs["a"][k].dtype == runs["c"][k].dtype for k in runs["a"])
    with pytest.raises(ConfigError, match="train.precision"):
        load_config("protonet-omniglot-5w1s-quick", ["train.precision=fp16"])


@pytest.mark.parametrize("amx", [True, False])
def test_auto_precision_follows_the_cpu_and_is_recorded(tmp_path, monkeypatch, amx):
    from metakit.engine import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_has_amx_bf16", lambda: amx)
    summary = train(tiny_config(precision="auto"), tmp_path / "run", progress=False)
    expected = "bf16" if amx else "fp32"
    assert summary["runtime"]["precision"] == expected
    assert summary["runtime"]["device"] == "cpu" and summary["runtime"]["processes"] == 1
    assert (
        read_meta(tmp_path / "run" / "checkpoints" / "last.safetensors")["runtime"]
        == (summary["runtime"])
    )
    auto = weights(tmp_path / "run")
    train(tiny_config(precision=expected), tmp_path / "same", progress=False)
    assert all(torch.equal(auto[k], weights(tmp_path / "same")[k]) for k in auto)
