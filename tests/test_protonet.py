import math

import pytest
import torch
from torch import nn

from metakit.algorithms import ALGORITHMS, ProtoNet
from metakit.algorithms.protonet import cosine_similarity, prototypes, squared_euclidean
from metakit.data import Episode
from metakit.errors import ConfigError
from metakit.models.backbone import Backbone


def identity_backbone(dim: int = 2) -> Backbone:
    return Backbone([nn.Flatten()], out_dim=dim)


def test_prototypes_are_class_means():
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    y = torch.tensor([0, 0, 1])
    assert torch.allclose(prototypes(z, y, 2), torch.tensor([[1.0, 0.0], [0.0, 4.0]]))


def test_loss_matches_hand_computation():
    # support: class 0 at (0,0) and (2,0) → prototype (1,0); class 1 at (0,4) → prototype (0,4)
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    query = torch.tensor([[1.0, 1.0], [0.0, 2.5]])
    ep = Episode(support, torch.tensor([0, 0, 1]), query, torch.tensor([0, 1]))
    algo = ProtoNet(identity_backbone())
    loss, metrics = algo.meta_loss(ep)
    # squared distances: q0 → (1, 1+9=10); q1 → (1+6.25=7.25, 2.25)
    d = [[1.0, 10.0], [7.25, 2.25]]
    expected = (
        -sum(
            -d[i][t] - math.log(math.exp(-d[i][0]) + math.exp(-d[i][1]))
            for i, t in enumerate([0, 1])
        )
        / 2
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["accuracy"] == 1.0


def test_cosine_distance_hand_computation():
    support = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    query = torch.tensor([[1.0, 1.0]])
    algo = ProtoNet(identity_backbone(), distance="cosine", scale=5.0)
    logits = algo.logits(algo.adapt(support, torch.tensor([0, 1])), query)
    c = 1 / math.sqrt(2)
    assert torch.allclose(logits, torch.tensor([[5 * c, 5 * c]]), atol=1e-6)


def test_squared_euclidean_matches_cdist():
    a, b = torch.randn(7, 5), torch.randn(3, 5)
    assert torch.allclose(squared_euclidean(a, b), torch.cdist(a, b) ** 2, atol=1e-5)


def test_learnable_scale_is_a_parameter():
    algo = ProtoNet(identity_backbone(), distance="cosine", learn_scale=True)
    assert any(name == "log_scale" for name, _ in algo.named_parameters())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"distance": "manhattan"}, "must be one of"),
        ({"scale": -1.0}, "positive"),
        ({"warp": 1}, "no option 'warp'"),
    ],
)
def test_bad_options_are_clear(options, message):
    with pytest.raises(ConfigError, match=message):
        ALGORITHMS.build("protonet", backbone=identity_backbone(), **options)


def test_distances_stay_fp32_under_bf16_autocast():
    """`train.precision: bf16` must not compute distances by expansion in bf16 (cancellation)."""
    a, b = torch.randn(6, 64) + 5, torch.randn(4, 64) + 5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d, c = squared_euclidean(a, b), cosine_similarity(a, b)
        raw = a @ b.T
    assert raw.dtype == torch.bfloat16  # what an unprotected product would give
    assert d.dtype == c.dtype == torch.float32
    assert torch.equal(d, squared_euclidean(a, b)) and torch.equal(c, cosine_similarity(a, b))
    double = squared_euclidean(a.double(), b.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert squared_euclidean(a.double(), b.double()).dtype == torch.float64
    assert torch.allclose(double, d.double(), rtol=1e-5)
