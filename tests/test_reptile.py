"""Reptile's outer step against a hand computation; serial vs batched updates."""

import pytest
import torch
import torch.nn.functional as F

from metakit import create_backbone
from metakit.algorithms import ALGORITHMS, Reptile
from metakit.data.sinusoid import SinusoidSampler
from metakit.errors import ConfigError


def reptile(**options) -> Reptile:
    torch.manual_seed(0)
    backbone = create_backbone("mlp", in_features=1, hidden=[6, 6]).double()
    return Reptile(backbone, task="regression", inner_steps=3, **options).double()


def by_hand(algo: Reptile, sx: torch.Tensor, sy: torch.Tensor, lr: float) -> dict:
    """Three plain SGD steps with torch.autograd on a copy of the weights."""
    params = {k: v.detach().clone().requires_grad_() for k, v in algo.backbone.named_parameters()}
    for _ in range(3):
        out = torch.func.functional_call(algo.backbone, params, (sx,))
        grads = torch.autograd.grad(F.mse_loss(out, sy), list(params.values()))
        params = {
            k: (p - lr * g).detach().requires_grad_()
            for (k, p), g in zip(params.items(), grads, strict=True)
        }
    return params


def test_outer_step_moves_towards_the_mean_adapted_weights():
    algo = reptile(inner_optimizer="sgd", inner_lr=0.05)
    batch = SinusoidSampler(shots=5, queries=3, seed=1).batch(0, 2)
    batch = type(batch)(*(t.double() for t in batch.tensors()))
    theta = {k: v.detach().clone() for k, v in algo.backbone.named_parameters()}
    phis = [by_hand(algo, batch.support_x[i], batch.support_y[i], 0.05) for i in range(2)]
    epsilon = 0.7
    opt = torch.optim.SGD(algo.parameters(), lr=epsilon, momentum=0.0)
    loss, metrics = algo.meta_loss(batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    for k, p in algo.backbone.named_parameters():
        mean_phi = (phis[0][k] + phis[1][k]) / 2
        expected = theta[k] + epsilon * (mean_phi - theta[k])
        assert torch.allclose(p, expected, atol=1e-12), k
    assert metrics["mse"] >= 0 and torch.isfinite(loss)


def test_vmap_equals_loop():
    batch = SinusoidSampler(shots=5, queries=3, seed=2).batch(0, 3)
    batch = type(batch)(*(t.double() for t in batch.tensors()))
    grads = []
    for vectorize in ("loop", "vmap"):
        algo = reptile(vectorize=vectorize)
        loss, _ = algo.meta_loss(batch)
        loss.backward()
        grads.append({k: p.grad for k, p in algo.named_parameters()})
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], atol=1e-10), k


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"first_order": True}, "has no option 'first_order'"),
        ({"inner_optimizer": "rmsprop"}, "must be one of"),
        ({"inner_steps": 0}, "at least one inner step"),
        ({"inner_lr": -1.0}, "inner_lr must be positive"),
    ],
)
def test_bad_reptile_configs(options, message):
    with pytest.raises(ConfigError, match=message):
        ALGORITHMS.build("reptile", backbone=create_backbone("mlp", in_features=4), **options)


def test_pretrained_baseline_refuses_classification():
    with pytest.raises(ConfigError, match="for regression"):
        ALGORITHMS.build(
            "pretrained", backbone=create_backbone("mlp", in_features=4), task="classification"
        )
