"""Meta Networks: fast weights matter, every parameter set learns, the per-example gradient path
equals a looped reference, gradient preprocessing, and a short learning run on Omniglot."""

import math

import pytest
import torch

from metakit import create_backbone
from metakit.algorithms import MetaNet
from metakit.algorithms.metanet import base_example_loss, ring_pairs
from metakit.data import TaskSampler
from metakit.errors import DataError
from metakit.functional.gradients import preprocess_gradient
from tests.conftest import needs_omniglot, synthetic_dataset


def tiny(**options):
    torch.manual_seed(0)
    backbone = create_backbone("conv4", image_size=8, hidden=8, depth=2)
    return MetaNet(backbone, ways=3, embed_dim=6, hidden=5, pairs=4, generator_hidden=4, **options)


def episode(shots=2):
    return TaskSampler(
        synthetic_dataset(classes=6, per_class=6, size=8), 3, shots, 2, seed=0
    ).sample(0)


def test_gradient_preprocessing_against_hand_values():
    p = 10.0
    g = torch.tensor([0.5, -2.0, 0.0, 1e-6, -1e-6])
    out = preprocess_gradient(g, p)
    assert torch.allclose(out[0], torch.tensor([math.log(0.5) / p, 1.0]))
    assert torch.allclose(out[1], torch.tensor([math.log(2.0) / p, -1.0]))
    assert torch.equal(out[2], torch.tensor([-1.0, 0.0]))  # small: (-1, e^p g)
    assert torch.allclose(out[3], torch.tensor([-1.0, math.exp(p) * 1e-6]))
    assert torch.allclose(out[4], torch.tensor([-1.0, -math.exp(p) * 1e-6]))


def test_fast_weights_change_the_layer_outputs():
    algo = tiny().eval()
    ep = episode()
    with algo.inference():
        state = algo.adapt(ep.support_x, ep.support_y)
        with_fast = algo.logits(state, ep.query_x)
        zeroed = {**state, "memory": torch.zeros_like(state["memory"])}
        zeroed["q_fast"] = {k: torch.zeros_like(v) for k, v in state["q_fast"].items()}
        without = algo.logits(zeroed, ep.query_x)
    assert state["memory"].abs().sum() > 0
    assert not torch.allclose(with_fast, without, atol=1e-4)


@pytest.mark.parametrize("first_order", [True, False])
def test_gradients_reach_all_four_parameter_sets(first_order):
    algo = tiny(first_order=first_order)
    loss, _ = algo.meta_loss(episode())
    loss.backward()
    for name, params in algo.parameter_sets().items():
        norm = sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)
        assert norm > 0, f"no gradient reached {name}"


def test_per_example_gradients_equal_a_loop():
    algo = tiny().double()
    feats = torch.randn(6, algo.b1.in_features, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    batched = algo.example_grads(feats, y, 3)
    params = algo.head_params(3)
    for i in range(6):
        loop = torch.autograd.grad(base_example_loss(params, feats[i], y[i]), list(params.values()))
        for key, g in zip(params, loop, strict=True):
            assert torch.allclose(batched[key][i], g, atol=1e-12)


def test_ring_pairs_are_distinct_and_neighbours_first():
    a, b = ring_pairs(4, 5)
    pairs = list(zip(a.tolist(), b.tolist(), strict=True))
    assert pairs[:3] == [(0, 1), (1, 2), (2, 3)]
    assert len(set(pairs)) == 5 and all(i < j for i, j in pairs)
    assert len(ring_pairs(3, 100)[0]) == 3  # all pairs when fewer than asked


def test_too_many_ways_is_a_clear_error():
    algo = tiny()
    ep = TaskSampler(synthetic_dataset(classes=6, per_class=6, size=8), 5, 1, 1, seed=0).sample(0)
    with pytest.raises(DataError, match="at most 3 ways"):
        algo.meta_loss(ep)


@needs_omniglot
def test_metanet_learns_on_omniglot():
    """About a minute of training on 5-way 1-shot episodes: held-out accuracy well above the
    20% of chance."""
    from metakit.data.omniglot import omniglot
    from metakit.engine.evaluate import evaluate

    torch.manual_seed(0)
    data = omniglot(split="vinyals", image_size=28, download=False)
    train = data.sampler("train", 5, 1, 5, seed=0)
    algo = MetaNet(create_backbone("conv4", hidden=32), ways=5)
    opt = torch.optim.Adam(algo.parameters(), 1e-3)
    for step in range(150):
        loss, _ = algo.meta_loss(train.sample(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    result = evaluate(algo, data.sampler("test", 5, 1, 5, seed=0), episodes=50)
    assert result.accuracy > 0.6
