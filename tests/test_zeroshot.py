"""Zero-shot prototypes from class metadata: sampler, identity start, learning, errors."""

import pytest
import torch
import torch.nn.functional as F

from metakit.algorithms import ALGORITHMS
from metakit.algorithms.protonet import cosine_similarity
from metakit.data.dataset import ClassDataset
from metakit.data.metadata import MetadataSampler
from metakit.errors import DataError
from metakit.models import create_backbone


def feature_dataset(classes: int = 12, per_class: int = 20, dim: int = 16, seed: int = 0):
    """Unit-norm class means plus noise; the metadata of a class is its mean seen through a
    fixed random rotation, so the identity map is a poor prototype and a learned g can fix it."""
    g = torch.Generator().manual_seed(seed)
    means = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    noise = 0.15 * torch.randn(classes * per_class, dim, generator=g)
    x = means.repeat_interleave(per_class, 0) + noise
    labels = torch.arange(classes).repeat_interleave(per_class)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    metadata = means @ rotation
    data = ClassDataset(x, labels, [f"c{i}" for i in range(classes)], "synthetic")
    return data, metadata


def test_sampler_gives_each_class_its_metadata():
    data, metadata = feature_dataset()
    sampler = MetadataSampler(data, metadata, ways=4, queries=3, seed=1)
    ep = sampler.sample(7)
    assert ep.support_x.shape == (4, 16) and ep.query_x.shape == (12, 16)
    assert torch.equal(ep.support_y, torch.arange(4))
    for k in range(4):
        q = ep.query_x[ep.query_y == k]
        rows = [int(torch.nonzero((data.images == r).all(1))[0]) for r in q]
        classes = {int(data.labels[i]) for i in rows}
        assert len(classes) == 1  # the queries of a way come from one class...
        assert torch.equal(ep.support_x[k], metadata[classes.pop()])  # ...given by its metadata
    assert torch.equal(sampler.sample(7).query_x, ep.query_x)  # reproducible
    assert sampler.shots == 0


def test_sampler_errors_are_clear():
    data, metadata = feature_dataset()
    with pytest.raises(DataError, match="no support examples"):
        MetadataSampler(data, metadata, ways=4, queries=3, shots=5)
    with pytest.raises(DataError, match=r"\[12, D\]"):
        MetadataSampler(data, metadata[:5], ways=4, queries=3)
    with pytest.raises(DataError, match="lower queries"):
        MetadataSampler(data, metadata, ways=4, queries=50)
    with pytest.raises(DataError, match="lower the number of ways"):
        MetadataSampler(data, metadata, ways=40, queries=3)


def test_untrained_map_is_the_cosine_to_metadata_baseline():
    data, metadata = feature_dataset()
    algo = ALGORITHMS.build("zeroshot", backbone=create_backbone("identity", in_features=16))
    ep = MetadataSampler(data, metadata, ways=5, queries=4, seed=0).sample(0)
    with torch.no_grad():
        logits = algo.logits(algo.adapt(ep.support_x, ep.support_y), ep.query_x)
    expected = cosine_similarity(ep.query_x, ep.support_x) * algo.log_scale.exp()
    torch.testing.assert_close(logits, expected)


def test_zero_shot_learns_the_metadata_map():
    data, metadata = feature_dataset(classes=40, per_class=10, dim=8)
    seen = data.labels < 30
    train = ClassDataset(data.images[seen], data.labels[seen], data.class_names[:30])
    test = ClassDataset(data.images[~seen], data.labels[~seen] - 30, data.class_names[30:])
    torch.manual_seed(0)
    algo = ALGORITHMS.build(
        "zeroshot", backbone=create_backbone("identity", in_features=8), hidden=0
    )

    def test_accuracy() -> float:
        sampler = MetadataSampler(test, metadata[30:], ways=5, queries=5, seed=3)
        accs = []
        with torch.no_grad():
            for i in range(50):
                ep = sampler.sample(i)
                out = algo.logits(algo.adapt(ep.support_x, ep.support_y), ep.query_x)
                accs.append((out.argmax(1) == ep.query_y).float().mean())
        return float(torch.stack(accs).mean())

    before = test_accuracy()
    opt = torch.optim.Adam(algo.parameters(), lr=0.02)
    sampler = MetadataSampler(train, metadata[:30], ways=10, queries=5, seed=0)
    for i in range(300):
        loss, _ = algo.meta_loss(sampler.sample(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = test_accuracy()
    # a linear g learns to undo the rotation on 30 seen classes and carries it to unseen ones
    assert before < 0.5 and after > 0.9, (before, after)


def test_images_as_metadata_is_a_clear_error():
    algo = ALGORITHMS.build("zeroshot", backbone=create_backbone("identity", in_features=16))
    with pytest.raises(DataError, match="class metadata"):
        algo.adapt(torch.rand(3, 1, 4, 4), torch.arange(3))
