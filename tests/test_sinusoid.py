import math

import pytest
import torch

from metakit.data.sinusoid import SinusoidSampler
from metakit.errors import DataError


def test_tasks_follow_the_maml_protocol():
    sampler = SinusoidSampler(shots=5, queries=10, seed=0)
    amps, phases = [], []
    for i in range(2000):
        task, _ = sampler.task(i)
        amps.append(task.amplitude)
        phases.append(task.phase)
    assert min(amps) >= 0.1 and max(amps) <= 5.0
    assert min(phases) >= 0.0 and max(phases) <= math.pi
    assert sum(amps) / len(amps) == pytest.approx(2.55, abs=0.1)  # mean of U[0.1, 5]
    ep = sampler.sample(3)
    assert ep.support_x.shape == (5, 1) and ep.query_y.shape == (10, 1)
    assert ep.support_x.abs().max() <= 5.0
    task, _ = sampler.task(3)
    assert torch.allclose(ep.support_y, task(ep.support_x))


def test_reproducible_and_batched():
    a, b = SinusoidSampler(10, 10, seed=4), SinusoidSampler(10, 10, seed=4)
    assert torch.equal(a.sample(7).query_y, b.sample(7).query_y)
    assert not torch.equal(a.sample(7).query_y, a.sample(8).query_y)
    assert a.batch(0, 25).support_x.shape == (25, 10, 1)


def test_bad_shots():
    with pytest.raises(DataError, match="shots >= 1"):
        SinusoidSampler(0, 5)
