"""Every registered backbone and algorithm builds and runs an episode through the interface."""

import pytest
import torch

from metakit import create_backbone, list_algorithms, list_backbones
from metakit.algorithms import ALGORITHMS
from metakit.engine.trainer import autocast
from metakit.errors import ConfigError
from metakit.registry import signature_of
from tests.conftest import synthetic_dataset


@pytest.mark.parametrize("name", list_backbones())
def test_backbone_shapes(name):
    if name == "minilm":  # text: token states of the frozen encoder's bottom layers
        pytest.importorskip("transformers", reason="the `text` extra is not installed")
        options, x = {}, torch.randn(3, 7, 384)
    else:
        options, x = {"in_channels": 1, "image_size": 28}, torch.rand(3, 1, 28, 28)
    bb = create_backbone(name, **options)
    z = bb.embed(x)
    assert z.shape == (3, bb.out_dim)
    assert len(bb.features) >= 1  # blocks are separate, so transfer can freeze the first N
    head = create_backbone(name, **options, num_classes=7)
    assert head(x[:2]).shape == (2, 7)


def test_conv4_layout():
    bb = create_backbone("conv4")
    assert len(bb.features) == 4 and bb.out_dim == 64
    for block in bb.features:
        kinds = [type(m).__name__ for m in block]
        assert kinds == ["PatchConv2d", "BatchNorm2d", "MaxPool2d", "ReLU"]
        assert isinstance(block[0], torch.nn.Conv2d)
        assert block[0].out_channels == 64 and block[0].kernel_size == (3, 3)


def test_conv4_pool_then_relu_equals_the_paper_order():
    torch.manual_seed(0)
    block = create_backbone("conv4", hidden=8, depth=1, channels_last=False).features[0].double()
    conv, bn, pool, _ = block
    x = torch.randn(4, 1, 10, 10, dtype=torch.float64, requires_grad=True)
    ours = block(x)
    paper = pool(torch.relu(bn(conv(x))))
    assert torch.equal(ours, paper)
    w = torch.randn_like(ours)
    g_ours = torch.autograd.grad((ours * w).sum(), [x, conv.weight])
    g_paper = torch.autograd.grad((paper * w).sum(), [x, conv.weight])
    for a, b in zip(g_ours, g_paper, strict=True):
        assert torch.allclose(a, b, atol=1e-12)


def test_unknown_backbone_lists_choices():
    with pytest.raises(ConfigError, match="available: conv4"):
        create_backbone("resnet999")


ALGORITHM_TASKS = [(n, t) for n in list_algorithms() for t in ALGORITHMS.get(n).tasks]


def interface_case(name: str, task: str):
    """A tiny algorithm of each registered kind with a sampler of matching tasks."""
    from metakit.data import TaskSampler
    from metakit.data.sinusoid import SinusoidSampler

    torch.manual_seed(0)
    accepted = signature_of(ALGORITHMS.get(name))[0]
    options = {"ways": 3} if "ways" in accepted else {}
    if "num_classes" in accepted:  # supervised pretraining: a classifier over all classes
        options["num_classes"] = 6
    if task == "zero-shot":  # one metadata vector per class in place of support examples
        from metakit.data.metadata import MetadataSampler

        data = synthetic_dataset(classes=6, per_class=6, size=8)
        backbone = create_backbone("conv4", image_size=8, hidden=8, depth=2)
        sampler = MetadataSampler(data, torch.randn(6, backbone.out_dim), 3, 2, seed=0)
    elif task == "regression":
        options = {"task": "regression"}
        backbone = create_backbone("mlp", in_features=1, hidden=[8, 8])
        sampler = SinusoidSampler(shots=5, queries=4, seed=0)
    else:
        # relation compares feature maps, so its backbone keeps the 8x8 map (no pooling)
        pool = {"pool": 0} if name == "relation" else {}
        backbone = create_backbone("conv4", image_size=8, hidden=8, depth=2, **pool)
        sampler = TaskSampler(synthetic_dataset(classes=6, per_class=6, size=8), 3, 2, 2, seed=0)
    return ALGORITHMS.build(name, backbone=backbone, **options), sampler


@pytest.mark.parametrize(("name", "task"), ALGORITHM_TASKS)
def test_algorithm_interface(name, task):
    algo, sampler = interface_case(name, task)
    loss, metrics = algo.meta_loss(sampler.batch(0, 2))
    assert loss.dim() == 0 and torch.isfinite(loss)
    if task != "regression":
        assert 0.0 <= metrics["accuracy"] <= 1.0
    else:
        assert metrics["mse"] >= 0.0
    loss.backward()
    assert any(p.grad is not None for p in algo.parameters())
    ep = sampler.sample(5)
    algo.eval()
    with algo.inference():
        out = algo.logits(algo.adapt(ep.support_x, ep.support_y), ep.query_x)
    assert out.shape == (ep.query_x.shape[0], 1 if task == "regression" else 3)


@pytest.mark.parametrize(("name", "task"), ALGORITHM_TASKS)
def test_bf16_autocast_training_step_tracks_fp32(name, task):
    """`train.precision: bf16` runs the step under autocast; its loss and gradient stay close to
    the fp32 ones for every algorithm (no op falls out of autocast with a dtype error)."""
    algo, sampler = interface_case(name, task)
    batch = sampler.batch(0, 2)
    result = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(1)  # algorithms that draw inside the step draw the same numbers
        algo.zero_grad(set_to_none=True)
        with autocast(precision, torch.device("cpu")):
            loss, _ = algo.meta_loss(batch)
        loss.backward()
        grads = [p.grad.flatten() for p in algo.parameters() if p.grad is not None]
        result[precision] = loss.detach().float(), torch.cat(grads).float()
    (loss32, grad32), (loss16, grad16) = result["fp32"], result["bf16"]
    assert torch.isfinite(loss16)
    assert abs(loss16 - loss32) <= 0.05 * abs(loss32) + 0.01
    assert grad16.shape == grad32.shape
    # 0.9, not higher: where a tiny case is already nearly solved (metanet's loss is ~0.04 at
    # init) the gradient is a near-cancellation in which bf16 rounding of the features shows
    # (cosine ~0.93); a dtype slip or an op computed in the wrong precision falls far lower.
    assert torch.nn.functional.cosine_similarity(grad32, grad16, dim=0) > 0.9


def test_impossible_backbone_options_are_config_errors():
    with pytest.raises(ConfigError, match="too small for 9 pooling blocks"):
        create_backbone("conv4", image_size=28, depth=9)
    with pytest.raises(ConfigError, match="widths must be positive"):
        create_backbone("mlp", in_features=4, hidden=[0])
