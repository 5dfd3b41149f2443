"""MAML / FOMAML / Meta-SGD against references: loop vs vmap, finite differences, hand algebra."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metakit import create_backbone
from metakit.algorithms import ALGORITHMS, MAML, MetaSGD
from metakit.algorithms.maml import Adapted
from metakit.data import Episode
from metakit.errors import ConfigError
from metakit.functional import adapt


def batch(tasks=3, ways=3, shots=2, queries=2, size=8, seed=0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(ways)
    return Episode(
        torch.randn(tasks, ways * shots, 1, size, size, generator=g, dtype=torch.float64),
        labels.repeat_interleave(shots).expand(tasks, -1).contiguous(),
        torch.randn(tasks, ways * queries, 1, size, size, generator=g, dtype=torch.float64),
        labels.repeat_interleave(queries).expand(tasks, -1).contiguous(),
    )


def conv_maml(cls=MAML, **options) -> MAML:
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # rates built as exactly 0.3, not float32's 0.3
    try:
        backbone = create_backbone("conv4", image_size=8, hidden=4, depth=2, channels_last=False)
        return cls(backbone, ways=3, **{"inner_lr": 0.3, "inner_steps": 2, **options})
    finally:
        torch.set_default_dtype(default)


def meta_grads(algo: MAML, ep: Episode) -> tuple[float, dict[str, torch.Tensor]]:
    algo.zero_grad()
    loss, _ = algo.meta_loss(ep)
    loss.backward()
    return loss.item(), {k: p.grad.clone() for k, p in algo.named_parameters()}


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("cls", [MAML, MetaSGD])
def test_vmap_equals_loop_with_batchnorm(cls, first_order):
    ep = batch()
    loop_loss, loop = meta_grads(conv_maml(cls, first_order=first_order, vectorize="loop"), ep)
    vmap_loss, vec = meta_grads(conv_maml(cls, first_order=first_order, vectorize="vmap"), ep)
    assert vmap_loss == pytest.approx(loop_loss, abs=1e-12)
    assert loop.keys() == vec.keys()
    for k in loop:
        assert torch.allclose(loop[k], vec[k], atol=1e-10), k


def test_first_order_gradient_is_gradient_at_adapted_parameters():
    algo = conv_maml(first_order=True, vectorize="loop")
    ep = batch(tasks=2)
    _, got = meta_grads(algo, ep)
    params = {k: v.detach() for k, v in algo.backbone.named_parameters()}
    buffers = dict(algo.backbone.named_buffers())
    expected = {k: torch.zeros_like(v) for k, v in params.items()}
    for task in ep.tasks():
        adapted = adapt(
            algo.backbone,
            params,
            buffers,
            task.support_x,
            task.support_y,
            F.cross_entropy,
            2,
            0.3,
            first_order=True,
        )
        adapted = {k: v.detach().requires_grad_() for k, v in adapted.items()}
        logits = functional_call(algo.backbone, (adapted, buffers), (task.query_x,))
        grads = torch.autograd.grad(F.cross_entropy(logits, task.query_y), list(adapted.values()))
        for k, g in zip(adapted, grads, strict=True):
            expected[k] += g / 2
    for k in expected:
        assert torch.allclose(got["backbone." + k], expected[k], atol=1e-12), k


@pytest.mark.parametrize("vectorize", ["loop", "vmap"])
def test_second_order_matches_finite_differences(vectorize):
    torch.manual_seed(1)
    backbone = create_backbone("mlp", in_features=4, hidden=[6])
    algo = MAML(backbone, ways=3, inner_lr=0.5, inner_steps=2, vectorize=vectorize).double()
    g = torch.Generator().manual_seed(2)
    ep = Episode(
        torch.randn(2, 6, 4, generator=g, dtype=torch.float64),
        torch.tensor([[0, 0, 1, 1, 2, 2]] * 2),
        torch.randn(2, 9, 4, generator=g, dtype=torch.float64),
        torch.tensor([[0, 1, 2] * 3] * 2),
    )
    _, grads = meta_grads(algo, ep)
    eps = 1e-6
    for name, param in algo.named_parameters():
        flat = param.data.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 4)):
            old = flat[i].item()
            flat[i] = old + eps
            plus = algo.meta_loss(ep)[0].item()
            flat[i] = old - eps
            minus = algo.meta_loss(ep)[0].item()
            flat[i] = old
            fd = (plus - minus) / (2 * eps)
            assert grads[name].view(-1)[i].item() == pytest.approx(fd, rel=1e-5, abs=1e-8), name
    # and the second-order terms matter here: first order gives a different gradient
    fo = MAML(backbone, ways=3, inner_lr=0.5, inner_steps=2, first_order=True).double()
    _, fo_grads = meta_grads(fo, ep)
    assert any(not torch.allclose(grads[k], fo_grads[k], atol=1e-6) for k in grads)


def test_metasgd_with_constant_rates_equals_maml():
    ep = batch()
    maml_loss, maml = meta_grads(conv_maml(MAML, vectorize="loop"), ep)
    sgd_loss, metasgd = meta_grads(conv_maml(MetaSGD, vectorize="loop"), ep)
    assert sgd_loss == pytest.approx(maml_loss, abs=1e-12)
    for k, g in maml.items():
        assert torch.allclose(metasgd[k], g, atol=1e-12), k
    assert any(k.startswith("rates") for k in metasgd), "the rates are meta-learned too"
    assert all(metasgd[k].abs().sum() > 0 for k in metasgd if k.startswith("rates"))


def test_test_time_adaptation_fits_the_support_set():
    algo = conv_maml(inner_lr=0.05).eval()
    task = batch(tasks=1, shots=3).tasks()[0]
    params = {k: v.detach() for k, v in algo.backbone.named_parameters()}
    start = Adapted(params, task.support_x, 3)
    with algo.inference():
        before = F.cross_entropy(algo.logits(start, task.support_x), task.support_y)
        state = algo.adapt(task.support_x, task.support_y)
        after = F.cross_entropy(algo.logits(state, task.support_x), task.support_y)
    assert after < before
    assert all(not v.requires_grad for v in state.params.values())


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("maml", {"inner_lr": -0.1}, "inner_lr must be positive"),
        ("maml", {"inner_steps": 0}, "at least one inner step"),
        ("metasgd", {"test_inner_steps": 0}, "at least one inner step"),
        ("maml", {"bn": "magic"}, "must be one of"),
        ("protonet", {"first_order": True}, "has no option 'first_order'"),
    ],
)
def test_bad_configuration_is_clear(name, options, message):
    with pytest.raises(ConfigError, match=message):
        ALGORITHMS.build(name, backbone=create_backbone("mlp", in_features=4), **options)


def test_wrong_ways_is_clear():
    algo = conv_maml()
    with pytest.raises(ConfigError, match="set algorithm.ways=4"):
        algo.meta_loss(batch(ways=4))
