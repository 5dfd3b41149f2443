"""Transfer learning: frozen blocks, gradient-free extraction, heads, supervised pretraining."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import metakit
from metakit.algorithms import Baseline
from metakit.cli import app
from metakit.data.batches import BatchSampler
from metakit.engine.trainer import train
from metakit.errors import ConfigError, DataError
from metakit.models import create_backbone
from metakit.transfer import Transfer, finetune, fit_head, param_groups
from tests.conftest import needs_omniglot, synthetic_dataset, tiny_config


def blobs(classes: int = 3, per_class: int = 6, size: int = 8, seed: int = 0):
    """Images whose classes differ by brightness pattern: easy to separate."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(per_class)
    x = torch.rand(len(y), 1, size, size, generator=g) * 0.2
    for c in range(classes):
        x[y == c, :, c * 2 : c * 2 + 2, :] += 0.8
    return x, y


def test_finetune_keeps_frozen_blocks_and_leaves_source_untouched():
    torch.manual_seed(0)
    backbone = create_backbone("conv4", image_size=8, hidden=8, depth=3)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    x, y = blobs()
    model = finetune(backbone, x, y, classes=3, freeze=2, steps=20, lr=0.05)
    tuned = model.backbone.state_dict()
    for key, value in before.items():
        assert torch.equal(backbone.state_dict()[key], value), f"source changed: {key}"
        if key.startswith(("features.0.", "features.1.")):
            assert torch.equal(tuned[key], value), f"frozen weight moved: {key}"
    moved = [k for k in before if k.startswith("features.2.") and "weight" in k]
    assert moved and any(not torch.equal(tuned[k], before[k]) for k in moved)
    assert (model(x).argmax(-1) == y).float().mean() >= 0.9


def test_discriminative_learning_rates():
    backbone = create_backbone("conv4", image_size=8, hidden=8, depth=3)
    head = torch.nn.Linear(backbone.out_dim, 3)
    groups = param_groups(backbone, head, lr=1.0, decay=0.5, freeze=1)
    assert [g["lr"] for g in groups] == [1.0, 0.5, 0.25]  # head, block 2, block 1
    with pytest.raises(ConfigError, match="freeze must lie in 0..3"):
        param_groups(backbone, head, lr=1.0, decay=0.5, freeze=4)


@pytest.mark.parametrize("head", ["linear", "cosine", "centroid"])
def test_extraction_never_computes_backbone_gradients(head):
    torch.manual_seed(0)
    backbone = create_backbone("conv4", image_size=8, hidden=8, depth=2)
    calls = []
    for p in backbone.parameters():
        p.register_hook(lambda grad: calls.append(grad))
    learner = Transfer(backbone, mode="extract", head=head, steps=30)
    x, y = blobs()
    with torch.enable_grad():
        out = learner.logits(learner.adapt(x, y), x)
    assert calls == [] and all(p.grad is None for p in backbone.parameters())
    assert not out.requires_grad
    assert (out.argmax(-1) == y).float().mean() >= 0.9


def test_linear_head_is_logistic_regression_and_deterministic():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(30, 4, generator=g)
    y = (z[:, 0] > 0).long()
    a, b = fit_head(z, y, 2, "linear", steps=200), fit_head(z, y, 2, "linear", steps=200)
    assert torch.equal(a.weight, b.weight)
    assert (a(z).argmax(-1) == y).float().mean() >= 0.95


def test_scratch_is_reproducible_and_rejects_frozen_blocks():
    backbone = create_backbone("conv4", image_size=8, hidden=8, depth=2)
    x, y = blobs()
    runs = []
    for _ in range(2):
        learner = Transfer(backbone, mode="scratch", steps=5, seed=3)
        runs.append(learner.logits(learner.adapt(x, y), x))
    assert torch.equal(runs[0], runs[1])
    with pytest.raises(ConfigError, match="freeze must be 0"):
        Transfer(backbone, mode="scratch", freeze=1)
    with pytest.raises(ConfigError, match="finetune takes head"):
        Transfer(backbone, mode="finetune", head="centroid")
    with pytest.raises(ConfigError, match="batch_size must be >= 0"):
        Transfer(backbone, mode="scratch", batch_size=-1)
    # minibatches change the fit (fewer images per step) but stay reproducible
    small = [Transfer(backbone, mode="scratch", steps=5, seed=3, batch_size=4) for _ in range(2)]
    outs = [t.logits(t.adapt(x, y), x) for t in small]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], runs[0])


def test_batch_sampler_draws_global_labels_reproducibly():
    data = synthetic_dataset(classes=6, per_class=5, size=4)
    sampler = BatchSampler(data, batch_size=8, seed=2)
    a, b = sampler.sample(3), sampler.sample(3)
    assert torch.equal(a.support_x, b.support_x) and a.query_x.shape[0] == 0
    assert not torch.equal(a.support_y, sampler.sample(4).support_y)
    assert int(a.support_y.max()) < 6 and a.support_x.dtype == torch.float32
    with pytest.raises(DataError, match="exceeds the 30 examples"):
        BatchSampler(data, batch_size=31)


def test_baseline_needs_its_class_count():
    backbone = create_backbone("conv4", image_size=8, hidden=8, depth=2)
    with pytest.raises(ConfigError, match="num_classes"):
        Baseline(backbone)
    algo = Baseline(backbone, num_classes=4)
    loss, metrics = algo.meta_loss(BatchSampler(synthetic_dataset(4, 4, 8), 8).sample(0))
    assert torch.isfinite(loss) and 0 <= metrics["accuracy"] <= 1
    with pytest.raises(DataError, match="outside the 4 classes"):
        algo.meta_loss(BatchSampler(synthetic_dataset(6, 4, 8), 24).sample(0))


def has_mnist() -> bool:
    return (
        Path(os.environ.get("METAKIT_DATA", "")) / "mnist" / "t10k-images-idx3-ubyte.gz"
    ).exists()


@needs_omniglot
def test_pretrain_then_transfer_cli(tmp_path):
    config = tiny_config(episodes=30, val_every=30, batch_size=64)
    config.algorithm = {"name": "baseline", "head": "cosine"}
    config.data = {"name": "omniglot", "split": "lake", "image_size": 28, "download": False}
    summary = train(config, tmp_path, progress=False)
    assert summary["steps"] == 30
    learner = metakit.load(tmp_path, checkpoint="last")
    assert learner.algorithm.num_classes == 775  # all Lake train characters
    if not has_mnist():
        pytest.skip("MNIST test split not found under $METAKIT_DATA")
    runner = CliRunner()
    base = ["transfer", "--from", str(tmp_path), "--target", "mnist", "--checkpoint", "last"]
    base += ["--episodes", "3", "--shots", "2", "--json", "--device", "cpu"]
    rows = {}
    for mode in (["--mode", "extract"], ["--mode", "finetune", "--freeze", "3", "--steps", "5"]):
        out = runner.invoke(app, [*base, *mode])
        assert out.exit_code == 0, out.output
        rows[mode[1]] = json.loads(out.output)
    assert all(0.1 < r["accuracy"] <= 1 and r["ways"] == 10 for r in rows.values())
    bad = runner.invoke(app, [*base, "--mode", "finetune", "--freeze", "9"])
    assert isinstance(bad.exception, ConfigError) and "freeze must lie in 0..4" in str(
        bad.exception
    )
