import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metakit.data import Episode, TaskSampler
from metakit.errors import DataError
from tests.conftest import synthetic_dataset


def image_ids(x: torch.Tensor) -> list[int]:
    return x[:, 0, 0, 0].mul(255).round().long().tolist()


@settings(max_examples=40, deadline=None)
@given(
    ways=st.integers(1, 10),
    shots=st.integers(1, 4),
    queries=st.integers(0, 4),
    seed=st.integers(0, 2**31),
    index=st.integers(0, 10**6),
    uneven=st.booleans(),
)
def test_episode_properties(ways, shots, queries, seed, index, uneven):
    ds = synthetic_dataset(classes=10, per_class=8, uneven=uneven)
    sampler = TaskSampler(ds, ways, shots, queries, seed=seed)
    ep = sampler.sample(index)
    assert ep.support_x.shape == (ways * shots, 1, 8, 8)
    assert ep.query_x.shape == (ways * queries, 1, 8, 8)
    assert ep.support_y.tolist() == [c for c in range(ways) for _ in range(shots)]
    assert ep.query_y.tolist() == [c for c in range(ways) for _ in range(queries)]
    assert float(ep.support_x.min()) >= 0.0 and float(ep.support_x.max()) <= 1.0
    support, query = sampler.indices(index)
    # no example is both support and query, and no example repeats
    flat = torch.cat([support.flatten(), query.flatten()]).tolist()
    assert len(flat) == len(set(flat))
    # every label maps to exactly one dataset class, the same for support and query
    for c in range(ways):
        classes = {int(ds.labels[i]) for i in torch.cat([support[c], query[c]]).tolist()}
        assert len(classes) == 1
    # and different labels are different classes
    assert len({int(ds.labels[support[c, 0]]) for c in range(ways)}) == ways
    # same seed and index → identical episode
    again = TaskSampler(ds, ways, shots, queries, seed=seed).sample(index)
    assert all(torch.equal(a, b) for a, b in zip(ep.tensors(), again.tensors(), strict=True))


def test_different_seeds_and_indices_differ():
    ds = synthetic_dataset(classes=20, per_class=10)
    a = TaskSampler(ds, 5, 1, 3, seed=0)
    b = TaskSampler(ds, 5, 1, 3, seed=1)
    assert not torch.equal(a.sample(0).support_x, b.sample(0).support_x)
    assert not torch.equal(a.sample(0).support_x, a.sample(1).support_x)


def test_batch_stacks_consecutive_episodes():
    ds = synthetic_dataset()
    sampler = TaskSampler(ds, 3, 2, 1, seed=5)
    batch = sampler.batch(4, 3)
    assert batch.batched and batch.support_x.shape[:2] == (3, 6)
    for i, task in enumerate(batch.tasks()):
        assert torch.equal(task.query_x, sampler.sample(4 + i).query_x)


@pytest.mark.parametrize(
    ("ways", "shots", "queries", "message"),
    [
        (11, 1, 1, "only 10 classes"),
        (5, 6, 3, "need 9 examples per class"),
        (0, 1, 1, "ways must be an integer >= 1"),
        (5, 0, 1, "shots must be an integer >= 1"),
    ],
)
def test_impossible_requests_are_clear_errors(ways, shots, queries, message):
    with pytest.raises(DataError, match=message):
        TaskSampler(synthetic_dataset(classes=10, per_class=8), ways, shots, queries)


def test_vinyals_splits_are_disjoint_and_complete(omniglot):
    train, val, test = (set(omniglot.split(s).class_names) for s in ("train", "val", "test"))
    trainval = set(omniglot.split("trainval").class_names)
    assert (len(train), len(val), len(test)) == (4112, 688, 1692)
    assert not (train & val) and not (train & test) and not (val & test)
    assert trainval == train | val
    # rotations are classes of their own, and the characters don't leak between splits
    chars = {
        s: {n.rsplit("/", 1)[0] for n in names}
        for s, names in (("train", train), ("val", val), ("test", test))
    }
    assert not (chars["train"] & chars["test"]) and not (chars["val"] & chars["test"])


def test_rotated_classes_are_rotations(omniglot):
    ds = omniglot.split("test")
    names = ds.class_names
    i0 = names.index(next(n for n in names if n.endswith("rot000")))
    base = names[i0].removesuffix("rot000")
    i90 = names.index(base + "rot090")
    img0 = ds.images[ds.class_index[i0][0]]
    img90 = ds.images[ds.class_index[i90][0]]
    assert torch.equal(torch.rot90(img0, 1, dims=(-2, -1)), img90)


def test_omniglot_episode_shapes(omniglot):
    ep = TaskSampler(omniglot.split("train"), 20, 5, 5, seed=0).sample(0)
    assert isinstance(ep, Episode)
    assert ep.support_x.shape == (100, 1, 28, 28) and ep.query_x.shape == (100, 1, 28, 28)
    assert ep.support_x.dtype == torch.float32


def test_lake_split_counts():
    from metakit.data.omniglot import LAKE_VAL_ALPHABETS, omniglot

    try:
        lake = omniglot(split="lake", download=False)
        background = lake.split("background")
    except Exception as e:  # pragma: no cover - only without data
        pytest.skip(str(e))
    assert background.num_classes == 964 and lake.split("evaluation").num_classes == 659
    train, val, test = (lake.split(s) for s in ("train", "val", "test"))
    assert train.num_classes + val.num_classes == 964 and test.num_classes == 659
    assert {n.split("/")[0] for n in val.class_names} == set(LAKE_VAL_ALPHABETS)
    assert not {n.split("/")[0] for n in train.class_names} & set(LAKE_VAL_ALPHABETS)
