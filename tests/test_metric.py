"""Matching, Relation and Siamese networks, nearest-centroid evaluation, and their pieces."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import metakit
from metakit.algorithms import ALGORITHMS
from metakit.algorithms.matching import MatchingNet
from metakit.algorithms.nearest_centroid import NearestCentroid
from metakit.algorithms.protonet import ProtoNet
from metakit.algorithms.relation import RelationNet
from metakit.algorithms.siamese import TEST_SHOTS_MEAN, Siamese
from metakit.cli import app
from metakit.config import Config
from metakit.data import TaskSampler
from metakit.data.augment import random_affine
from metakit.data.pairs import balanced_pairs
from metakit.engine.build import build_algorithm
from metakit.engine.evaluate import evaluate
from metakit.engine.trainer import train
from metakit.errors import ConfigError, DataError
from metakit.models import create_backbone
from metakit.models.backbone import Backbone
from tests.conftest import needs_omniglot, synthetic_dataset, tiny_config

METRIC = ["protonet", "matching", "relation", "siamese"]


def identity_backbone(dim: int) -> Backbone:
    return Backbone([nn.Identity()], out_dim=dim)


def test_matching_attention_equals_hand_computation():
    algo = MatchingNet(identity_backbone(2), scale=1.0, learn_scale=False)
    support = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    support_y = torch.tensor([0, 1, 1])
    query = torch.tensor([[2.0, 1.0]])
    log_p = algo.logits(algo.adapt(support, support_y), query)
    # cosines of (2,1) with (1,0), (0,1), (1,1): 2/sqrt5, 1/sqrt5, 3/sqrt10
    cos = [2 / math.sqrt(5), 1 / math.sqrt(5), 3 / math.sqrt(10)]
    e = [math.exp(c) for c in cos]
    expected = [e[0] / sum(e), (e[1] + e[2]) / sum(e)]
    assert torch.allclose(log_p.exp(), torch.tensor([expected]), atol=1e-6)


def test_matching_fce_is_a_distribution_and_uses_the_support_context():
    torch.manual_seed(0)
    algo = MatchingNet(identity_backbone(4), fce=True, read_steps=3)
    support, support_y = torch.randn(6, 4), torch.arange(3).repeat_interleave(2)
    query = torch.randn(5, 4)
    log_p = algo.logits(algo.adapt(support, support_y), query)
    assert log_p.shape == (5, 3)
    assert torch.allclose(log_p.exp().sum(-1), torch.ones(5), atol=1e-5)
    # with full context embeddings, a support example's embedding depends on the others
    g = algo.contextual_support(support)
    g_changed = algo.contextual_support(torch.cat([support[:5], torch.randn(1, 4)]))
    assert not torch.allclose(g[0], g_changed[0])
    plain = MatchingNet(identity_backbone(4)).contextual_support(support)
    assert torch.equal(plain, support)


def test_relation_scores_shape_range_and_split_convolution():
    torch.manual_seed(0)
    algo = RelationNet(create_backbone("conv4", image_size=28, hidden=8, pool=2)).double()
    sampler = TaskSampler(synthetic_dataset(classes=6, per_class=6, size=28), 4, 2, 3, seed=0)
    ep = sampler.sample(0)
    support_x, query_x = ep.support_x.double(), ep.query_x.double()
    algo.eval()
    classes = algo.adapt(support_x, ep.support_y)
    assert classes.shape == (4, 8, 7, 7)  # K=2 support maps summed per class
    scores = algo.logits(classes, query_x)
    assert scores.shape == (12, 4)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    # the split first convolution equals the paper's concatenated pairs
    queries = algo.backbone.feature_map(query_x)
    pairs = torch.cat(
        [
            classes.unsqueeze(0).expand(12, -1, -1, -1, -1),
            queries.unsqueeze(1).expand(-1, 4, -1, -1, -1),
        ],
        dim=2,
    ).flatten(0, 1)
    assert torch.allclose(algo.relation(pairs).view(12, 4), scores, atol=1e-10)
    probs = algo.probabilities(scores)
    assert torch.allclose(probs.sum(-1), torch.ones(12, dtype=probs.dtype))


def test_relation_all_pairs_equals_concatenated_pairs_in_training():
    """The folded BatchNorm over the grid of pair sums gives the scores, gradients and
    running averages that the plain module gives on the Q * W concatenated pairs."""
    torch.manual_seed(0)
    fast = RelationNet(create_backbone("conv4", image_size=28, hidden=8, pool=2)).double()
    plain = copy.deepcopy(fast)
    queries = torch.randn(6, 8, 7, 7, dtype=torch.float64) * 2 + 1
    classes = torch.randn(3, 8, 7, 7, dtype=torch.float64) - 0.5
    fast.train(), plain.train()
    scores = fast.relation.all_pairs(queries, classes)
    pairs = torch.cat(
        [
            classes.unsqueeze(0).expand(6, -1, -1, -1, -1),
            queries.unsqueeze(1).expand(-1, 3, -1, -1, -1),
        ],
        dim=2,
    ).flatten(0, 1)
    expected = plain.relation(pairs).view(6, 3)
    assert torch.allclose(scores, expected, atol=1e-10)
    (scores * torch.arange(18.0, dtype=torch.float64).view(6, 3)).sum().backward()
    (expected * torch.arange(18.0, dtype=torch.float64).view(6, 3)).sum().backward()
    for (name, p), q in zip(
        fast.relation.named_parameters(), plain.relation.parameters(), strict=True
    ):
        assert torch.allclose(p.grad, q.grad, atol=1e-9), name
    for (name, b), c in zip(fast.relation.named_buffers(), plain.relation.buffers(), strict=True):
        assert torch.allclose(b.double(), c.double(), atol=1e-12), name
    assert not torch.equal(fast.relation.rest1[0].running_mean, torch.zeros(8, dtype=torch.float64))


def test_relation_test_bn_batch_normalises_each_episode_as_training_does():
    torch.manual_seed(0)
    backbone = create_backbone("conv4", image_size=28, hidden=8, pool=2)
    algo = RelationNet(backbone, test_bn="batch").double()
    ep = TaskSampler(synthetic_dataset(classes=6, per_class=6, size=28), 3, 1, 4, seed=0).sample(0)
    support_x, query_x = ep.support_x.double(), ep.query_x.double()
    images = torch.cat([support_x, query_x])
    algo.train()
    with torch.no_grad():
        expected = algo.scores(images, ep.support_y)  # training mode: the batch's statistics
    state = {k: v.clone() for k, v in algo.state_dict().items()}
    algo.eval()
    with torch.inference_mode():
        scores = algo.logits(algo.adapt(support_x, ep.support_y), query_x)
        classes = algo.class_maps(algo.backbone.feature_map(support_x), ep.support_y)
        running = algo.relation.all_pairs(algo.backbone.feature_map(query_x), classes)
    assert torch.allclose(scores, expected, atol=1e-10)
    assert not torch.allclose(scores, running, atol=1e-3)  # running averages differ
    assert not algo.training and all(not m.training for m in algo.modules())
    for key, value in algo.state_dict().items():  # running averages untouched
        assert torch.equal(value, state[key]), key
    with pytest.raises(ConfigError, match="test_bn"):
        RelationNet(backbone, test_bn="transductive")


def test_relation_refuses_a_backbone_without_a_feature_map():
    with pytest.raises(ConfigError, match="pool: 2"):
        RelationNet(create_backbone("conv4", image_size=28))


def test_balanced_pairs():
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3])
    for seed in range(5):
        first, second, same = balanced_pairs(labels, torch.Generator().manual_seed(seed))
        assert same.sum() == len(same) / 2  # exactly balanced
        matches = labels[first] == labels[second]
        assert torch.equal(matches, same.bool())  # "different" never pairs a class with itself
        assert bool((first != second).all())  # "same" pairs are two distinct examples
        assert torch.equal(first, torch.cat([torch.arange(10), torch.arange(10)]))


def test_balanced_pairs_need_two_examples_per_class():
    with pytest.raises(DataError, match="at least two examples"):
        balanced_pairs(torch.tensor([0, 0, 1]))


def test_siamese_paper_rule_scores_are_class_mean_probabilities():
    torch.manual_seed(0)
    algo = Siamese(identity_backbone(3), test_shots_mean="probability")
    support, support_y = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    query = torch.randn(2, 3)
    scores = algo.logits(algo.adapt(support, support_y), query)
    p = torch.sigmoid(algo.same_logit(query[:, None], support[None]))
    expected = torch.stack([p[:, :2].mean(1), p[:, 2:].mean(1)], 1)
    assert torch.allclose(scores, expected)
    # symmetric in the pair, as twin networks must be
    assert torch.allclose(
        algo.same_logit(query[0], support[1]), algo.same_logit(support[1], query[0])
    )


def test_siamese_test_shots_mean_variants_against_hand_computation():
    torch.manual_seed(0)
    support, support_y = torch.randn(5, 3), torch.tensor([0, 0, 1, 1, 1])
    query = torch.randn(2, 3)
    groups = [slice(0, 2), slice(2, 5)]
    algo = Siamese(identity_backbone(3))
    assert algo.test_shots_mean == "embedding"  # the default, chosen on Omniglot val
    with torch.no_grad():
        algo.head[0].weight.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
        algo.head[0].bias.fill_(0.3)
    logit = algo.same_logit(query[:, None], support[None])
    expected = {
        "logit": torch.stack([torch.sigmoid(logit[:, g].mean(1)) for g in groups], 1),
        "embedding": torch.stack(
            [torch.sigmoid(algo.same_logit(query, support[g].mean(0))) for g in groups], 1
        ),
    }
    for mean in ("logit", "embedding"):
        algo.test_shots_mean = mean
        scores = algo.logits(algo.adapt(support, support_y), query)
        assert torch.allclose(scores, expected[mean])
    assert not torch.allclose(expected["logit"], expected["embedding"])
    # with one shot per class, every way of averaging is the paper's rule
    one = [Siamese(identity_backbone(3), test_shots_mean=m) for m in TEST_SHOTS_MEAN]
    for algo in one[1:]:
        algo.load_state_dict(one[0].state_dict())
    single = [a.logits(a.adapt(support[1:3], torch.tensor([0, 1])), query) for a in one]
    assert all(torch.allclose(single[0], s) for s in single[1:])
    with pytest.raises(ConfigError, match="test_shots_mean"):
        Siamese(identity_backbone(3), test_shots_mean="median")


def test_siamese_zero_shots_and_fce_elsewhere_are_clear_errors():
    algo = Siamese(identity_backbone(3))
    with pytest.raises(DataError, match="shots >= 1"):
        algo.adapt(torch.empty(0, 3), torch.empty(0, dtype=torch.long))
    for name in ("protonet", "siamese", "relation"):
        with pytest.raises(ConfigError, match="fce"):
            ALGORITHMS.build(name, backbone=identity_backbone(3), fce=True)


def test_random_affine():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 28, 28)
    assert torch.allclose(random_affine(x, p=0.0), x, atol=1e-5)  # no component: identity
    y = random_affine(x, p=1.0)
    assert y.shape == x.shape and not torch.allclose(y, x)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(random_affine(x, generator=g), random_affine(x, generator=g.manual_seed(1)))


def test_nearest_centroid_without_norm_equals_protonet():
    torch.manual_seed(0)
    backbone = create_backbone("conv4", image_size=28, hidden=8)
    ep = TaskSampler(synthetic_dataset(classes=6, per_class=6, size=28), 3, 2, 2, seed=0).sample(1)
    proto, nc = ProtoNet(backbone).eval(), NearestCentroid(backbone, norm="none").eval()
    with torch.inference_mode():
        a = proto.logits(proto.adapt(ep.support_x, ep.support_y), ep.query_x)
        b = nc.logits(nc.adapt(ep.support_x, ep.support_y), ep.query_x)
        center = torch.randn(backbone.out_dim)
        cl2n = NearestCentroid(backbone, norm="cl2n", center=center).eval()
        z = cl2n.features(ep.query_x)
    assert torch.allclose(a, b, atol=1e-4)
    assert torch.allclose(z.norm(dim=-1), torch.ones(len(z)), atol=1e-5)
    assert torch.allclose(z, F.normalize(backbone.embed(ep.query_x) - center, dim=-1), atol=1e-5)
    with pytest.raises(ConfigError, match="center"):
        NearestCentroid(backbone, norm="cl2n")


def metric_config(name: str, episodes: int, **train: object) -> Config:
    algorithm = {"protonet": {}, "matching": {}, "relation": {}, "siamese": {}}[name]
    config = tiny_config(episodes=episodes, **train)
    config.algorithm = {"name": name, **algorithm}
    config.backbone = {"name": "conv4", "hidden": 32, **({"pool": 2} if name == "relation" else {})}
    return config.validate()


@needs_omniglot
@pytest.mark.parametrize("name", METRIC)
def test_checkpoint_round_trip(name, tmp_path, omniglot):
    config = metric_config(name, episodes=2, val_every=2)
    train(config, tmp_path, progress=False)
    ep = TaskSampler(omniglot.split("test"), 5, 2, 3, seed=4).sample(0)
    learner = metakit.load(tmp_path, checkpoint="last")
    learner.fit(ep.support_x, ep.support_y)
    first = learner.predict_proba(ep.query_x)
    again = metakit.load(tmp_path, checkpoint="last").fit(ep.support_x, ep.support_y)
    assert torch.equal(first, again.predict_proba(ep.query_x))
    assert torch.allclose(first.sum(-1), torch.ones(15), atol=1e-5)
    assert torch.equal(learner.predict(ep.query_x), first.argmax(-1))


@needs_omniglot
@pytest.mark.parametrize("name", ["matching", "relation", "siamese"])
def test_metric_method_learns_omniglot(name, tmp_path, omniglot):
    """A few hundred episodes on real Omniglot: far above the 20% chance of 5-way."""
    ways = 20 if name != "relation" else 10
    episodes = 600 if name == "siamese" else 200  # pair verification learns more slowly
    config = metric_config(
        name, episodes=episodes, ways=ways, queries=4, val_every=200, val_episodes=20, lr_step=1000
    )
    train(config, tmp_path, progress=False)
    learner = metakit.load(tmp_path, checkpoint="last")
    result = evaluate(learner.algorithm, omniglot.sampler("test", 5, 1, 15, seed=0), episodes=100)
    untrained = build_algorithm(config, omniglot.inputs)
    baseline = evaluate(untrained, omniglot.sampler("test", 5, 1, 15, seed=0), episodes=100)
    assert result.accuracy >= 0.70, result.summary()
    assert result.accuracy > baseline.accuracy + 0.1


@needs_omniglot
def test_eval_nearest_centroid_cli(tmp_path):
    train(metric_config("siamese", episodes=2, val_every=2), tmp_path, progress=False)
    runner = CliRunner()
    args = ["eval", str(tmp_path), "--episodes", "5", "--json", "--device", "cpu"]
    for norm in ("l2", "cl2n"):
        out = runner.invoke(app, [*args, "--method", "nearest-centroid", "--norm", norm])
        assert out.exit_code == 0, out.output
        row = json.loads(out.output)
        assert row["method"] == "nearest-centroid" and row["norm"] == norm
        assert 0.0 <= row["accuracy"] <= 1.0 and row["episodes"] == 5
    plain = json.loads(runner.invoke(app, args).output)
    assert plain["method"] == "siamese"
    bad = runner.invoke(app, [*args, "--method", "knn"])
    assert bad.exit_code != 0 and "nearest-centroid" in bad.output
