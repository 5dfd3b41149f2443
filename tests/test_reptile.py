"""Reptile's outer step against a hand computation (full-batch and mini-batch inner steps);
vmap vs loop."""

import pytest
import torch
import torch.nn.functional as F

from metakit import create_backbone
from metakit.algorithms import ALGORITHMS, Reptile
from metakit.data.sinusoid import SinusoidSampler
from metakit.errors import ConfigError
from metakit.functional import adam, adapt_batches


def reptile(**options) -> Reptile:
    torch.manual_seed(0)
    backbone = create_backbone("mlp", in_features=1, hidden=[6, 6]).double()
    return Reptile(backbone, task="regression", inner_steps=3, **options).double()


def by_hand(algo: Reptile, xs: list, ys: list, lr: float) -> dict:
    """Plain SGD steps, one per batch, with torch.autograd on a copy of the weights."""
    params = {k: v.detach().clone().requires_grad_() for k, v in algo.backbone.named_parameters()}
    for x, y in zip(xs, ys, strict=True):
        out = torch.func.functional_call(algo.backbone, params, (x,))
        grads = torch.autograd.grad(F.mse_loss(out, y), list(params.values()))
        params = {
            k: (p - lr * g).detach().requires_grad_()
            for (k, p), g in zip(params.items(), grads, strict=True)
        }
    return params


@pytest.mark.parametrize("inner_batch", [None, 2])
def test_outer_step_moves_towards_the_mean_adapted_weights(inner_batch):
    algo = reptile(inner_optimizer="sgd", inner_lr=0.05, inner_batch=inner_batch)
    batch = SinusoidSampler(shots=6, queries=3, seed=1).batch(0, 2)
    batch = type(batch)(*(t.double() for t in batch.tensors()))
    theta = {k: v.detach().clone() for k, v in algo.backbone.named_parameters()}
    if inner_batch is None:  # three full-batch steps
        steps = [([batch.support_x[i]] * 3, [batch.support_y[i]] * 3) for i in range(2)]
    else:  # one pass over a shuffle: three disjoint pairs, drawn as meta_loss will draw them
        torch.manual_seed(5)
        perms = [torch.randperm(6).view(3, 2) for _ in range(2)]
        steps = [
            (list(batch.support_x[i][perms[i]]), list(batch.support_y[i][perms[i]]))
            for i in range(2)
        ]
        torch.manual_seed(5)
    phis = [by_hand(algo, *steps[i], 0.05) for i in range(2)]
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


@pytest.mark.parametrize("inner_batch", [None, 4])
def test_vmap_equals_loop(inner_batch):
    batch = SinusoidSampler(shots=5, queries=3, seed=2).batch(0, 3)
    batch = type(batch)(*(t.double() for t in batch.tensors()))
    grads = []
    for vectorize in ("loop", "vmap"):
        algo = reptile(vectorize=vectorize, inner_batch=inner_batch)
        torch.manual_seed(1)  # the same mini-batches for both paths
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
        ({"inner_batch": 0}, "inner_batch must be >= 1"),
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


def sinusoid_batch(seed: int, tasks: int = 3):
    batch = SinusoidSampler(shots=5, queries=3, seed=seed).batch(0, tasks)
    return type(batch)(*(t.double() for t in batch.tensors()))


def test_carried_adam_state_is_the_mean_of_the_tasks_final_states():
    algo = reptile(carry_inner_state=True)
    assert algo.inner_start_state()[0] == 0  # Adam's step count starts at zero
    batch = sinusoid_batch(3)
    theta = {k: v.detach().clone() for k, v in algo.backbone.named_parameters()}
    algo.meta_loss(batch)
    t, m, v = algo.inner_start_state()
    assert t == 3  # one meta-batch of 3 inner steps (tasks run side by side, not in sequence)
    finals = [
        adapt_batches(
            algo.backbone,
            theta,
            {},
            [(batch.support_x[i], batch.support_y[i])] * 3,
            F.mse_loss,
            adam(1e-3, b1=0.0),
        )[1]
        for i in range(3)
    ]
    for k in theta:
        assert torch.allclose(v[k], sum(f[2][k] for f in finals) / 3, rtol=1e-10), k
        assert torch.allclose(m[k], sum(f[1][k] for f in finals) / 3, rtol=1e-10), k
    algo.meta_loss(sinusoid_batch(4))
    assert algo.inner_start_state()[0] == 6  # the next meta-batch continued from it


def test_carried_state_vmap_equals_loop_and_round_trips():
    states, grads = [], []
    for vectorize in ("loop", "vmap"):
        algo = reptile(vectorize=vectorize, carry_inner_state=True)
        for seed in (5, 6):  # the second meta-batch starts from the state the first left
            algo.zero_grad()
            loss, _ = algo.meta_loss(sinusoid_batch(seed))
            loss.backward()
        states.append(algo.state_dict())
        grads.append({k: p.grad for k, p in algo.named_parameters()})
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], atol=1e-10), k
    assert any(k.startswith("inner_state_") for k in states[0])
    for k in states[0]:
        assert torch.allclose(states[0][k].double(), states[1][k].double(), atol=1e-10), k
    fresh = reptile(carry_inner_state=True)
    fresh.load_state_dict(states[0])
    assert fresh.inner_start_state()[0] == 6


def test_test_time_adaptation_starts_from_the_carried_state_and_leaves_it():
    algo = reptile(carry_inner_state=True)
    algo.meta_loss(sinusoid_batch(7))
    before = {k: v.clone() for k, v in algo.state_dict().items()}
    episode = sinusoid_batch(8, tasks=1)
    sx, sy = episode.support_x[0], episode.support_y[0]
    carried = algo.adapt(sx, sy, steps=2).params
    assert all(torch.equal(v, algo.state_dict()[k]) for k, v in before.items())
    plain = reptile()
    plain.load_state_dict({k: v for k, v in before.items() if not k.startswith("inner_state_")})
    fresh = plain.adapt(sx, sy, steps=2).params
    assert any(not torch.allclose(carried[k], fresh[k]) for k in carried)
