"""MANN: LRUA addressing by hand, per-episode memory reset, the label-offset sequence builder,
clear configuration errors, and a short learning run on real Omniglot."""

import pytest
import torch

from metakit import create_backbone
from metakit.algorithms import MANN
from metakit.algorithms.mann import (
    content_read,
    delayed_labels,
    instance_numbers,
    least_used_weights,
    lrua_write,
)
from metakit.data import Episode, TaskSampler
from metakit.data.sampler import episode_generator
from metakit.errors import ConfigError, DataError
from tests.conftest import needs_omniglot, synthetic_dataset


def test_lrua_write_zeroes_and_writes_the_least_used_slot():
    memory = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # [B=1, N=3, W=2]
    usage = torch.tensor([[0.9, 0.5, 0.1]])  # slot 2 is the least used
    least = least_used_weights(usage, 1)
    assert least.tolist() == [[[0.0, 0.0, 1.0]]]
    read_prev = torch.tensor([[[0.2, 0.8, 0.0]]])
    key = torch.tensor([[[3.0, -1.0]]])
    alpha = torch.tensor([[-1e4]])  # gate 0: write only to the least-used slot
    write, new = lrua_write(memory, read_prev, least, key, alpha)
    assert torch.allclose(write, torch.tensor([[[0.0, 0.0, 1.0]]]))
    # slot 2 was zeroed (its 5, 5 is gone) and holds exactly the key; the others are untouched
    assert torch.allclose(new[0, 2], key[0, 0])
    assert torch.equal(new[0, :2], memory[0, :2])
    # gate 1: the write follows the previous read weights, added on top of the old contents
    write, new = lrua_write(memory, read_prev, least, key, torch.tensor([[1e4]]))
    assert torch.allclose(write, read_prev)
    assert torch.allclose(new[0, 0], memory[0, 0] + 0.2 * key[0, 0])
    assert torch.allclose(new[0, 2], torch.zeros(2))  # zeroed, nothing written there


def test_each_head_writes_its_own_least_used_slot():
    memory = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [2.0, 2.0]]])
    usage = torch.tensor([[0.9, 0.2, 0.1, 0.5]])  # least used: slot 2, then slot 1
    least = least_used_weights(usage, 2)
    assert least.argmax(-1).tolist() == [[2, 1]]
    values = torch.tensor([[[3.0, -1.0], [0.5, 4.0]]])
    gate_off = torch.full((1, 2), -1e4)  # write only to the least-used slots
    _, new = lrua_write(memory, torch.zeros(1, 2, 4), least, values, gate_off)
    # both slots were zeroed and each holds exactly its head's value, not the sum of both
    assert torch.allclose(new[0, 2], values[0, 0]) and torch.allclose(new[0, 1], values[0, 1])
    assert torch.equal(new[0, [0, 3]], memory[0, [0, 3]])


def test_content_read_weights_sum_to_one_and_follow_cosine():
    memory = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]]])
    key = torch.tensor([[[2.0, 0.0]]])
    weights, reads = content_read(memory, key, torch.ones(1, 1))
    expected = torch.tensor([1.0, 0.0, -1.0]).softmax(0)
    assert torch.allclose(weights[0, 0], expected)
    assert torch.allclose(weights.sum(-1), torch.ones(1, 1))
    assert torch.allclose(reads[0, 0], expected @ memory[0])


@pytest.mark.parametrize("read_from", ["previous", "written"])
def test_read_addresses_the_memory_before_or_after_the_write(read_from):
    torch.manual_seed(0)
    algo = MANN(
        create_backbone("identity", in_features=4), ways=2, slots=6, width=3, heads=2,
        read_from=read_from,
    )  # fmt: skip
    state = algo.initial_state(1, torch.zeros(1, 4))
    _, state = algo.step(state, torch.randn(1, 4), torch.zeros(1, 2))
    x = torch.randn(1, 4)
    _, new = algo.step(state, x, torch.zeros(1, 2))
    h, _ = algo.cell(
        torch.cat([x, torch.zeros(1, 2), state.reads.flatten(1)], -1), (state.h, state.c)
    )
    iface = algo.interface(h).view(1, 2, 8)  # key 3, add vector 3, gate, strength
    keys, strength = torch.tanh(iface[..., :3]), torch.nn.functional.softplus(iface[..., 7]) + 1
    addressed = state.memory if read_from == "previous" else new.memory
    weights, _ = content_read(addressed, keys, strength)
    assert torch.allclose(new.read_weights, weights, atol=1e-6)
    assert torch.allclose(new.reads, weights @ new.memory, atol=1e-6)  # the values of M_t


def test_usage_decays_with_gamma_and_picks_the_least_used():
    torch.manual_seed(0)
    algo = MANN(create_backbone("identity", in_features=4), ways=2, slots=6, width=3, heads=2)
    algo.gamma = 0.5
    with torch.no_grad():  # alpha = 0 (write gate 1/2) for a hand computation of the usage
        algo.interface.weight.zero_()
        algo.interface.bias.zero_()
    state = algo.initial_state(1, torch.zeros(1, 4))
    _, new = algo.step(state, torch.randn(1, 4), torch.zeros(1, 2))
    _, newer = algo.step(new, torch.randn(1, 4), torch.zeros(1, 2))
    write = 0.5 * new.read_weights + 0.5 * new.least_used
    expected = 0.5 * new.usage + newer.read_weights.sum(1) + write.sum(1)
    assert torch.allclose(newer.usage, expected)
    picked = newer.least_used[0].argmax(-1)  # head r gets the r-th smallest usage (ties: any)
    assert picked.unique().numel() == 2
    assert torch.equal(newer.usage[0, picked], newer.usage[0].sort().values[:2])


def test_sequence_builder_delays_labels_and_counts_presentations():
    y = torch.tensor([[2, 0, 2, 1, 0, 2]])
    onehot = torch.nn.functional.one_hot(y, 3).float()
    delayed = delayed_labels(onehot)
    assert torch.equal(delayed[0, 0], torch.zeros(3))  # the first step has the null label
    assert torch.equal(delayed[0, 1:], onehot[0, :-1])  # x_t is paired with y_{t-1}
    assert instance_numbers(y).tolist() == [[1, 1, 2, 1, 2, 3]]


def tiny_mann(**options):
    torch.manual_seed(0)
    backbone = create_backbone("identity", in_channels=1, image_size=8)
    return MANN(backbone, ways=3, controller=16, slots=12, width=5, heads=2, **options).eval()


@pytest.mark.parametrize("labels", ["onehot", "string"])
def test_memory_is_reset_between_episodes(labels):
    """Outputs of an episode do not depend on what ran before: running episode B alone or
    after A in the same batch gives the same scores, and relabelling A changes nothing of B."""
    algo = tiny_mann(labels=labels)
    sampler = TaskSampler(synthetic_dataset(classes=6, per_class=6, size=8), 3, 1, 3, seed=0)
    a, b = sampler.sample(0), sampler.sample(1)
    with torch.no_grad():
        alone = algo.logits(algo.adapt(b.support_x, b.support_y), b.query_x)
        algo.logits(algo.adapt(a.support_x, a.support_y), a.query_x)  # an episode before it
        after = algo.logits(algo.adapt(b.support_x, b.support_y), b.query_x)
        assert torch.equal(alone, after)
        g = episode_generator(0, 1, "sequence")
        x, y = algo.sequence(b, g)
        perm = torch.tensor([2, 0, 1])  # A's label order differs, B identical
        xa, ya = algo.sequence(a, episode_generator(0, 0, "sequence"))
        both = algo.sequence_log_probs(torch.cat([xa, x]), torch.cat([ya, y]), None)
        both2 = algo.sequence_log_probs(torch.cat([xa, x]), torch.cat([perm[ya], y]), None)
    if labels == "onehot":  # string codes are drawn per batch, so compare the one-hot case
        assert torch.allclose(both[1], both2[1])


def test_fit_predict_and_instance_protocol_shapes():
    algo = tiny_mann()
    ep = TaskSampler(synthetic_dataset(classes=6, per_class=6, size=8), 3, 2, 3, seed=0).sample(0)
    with torch.no_grad():
        out = algo.logits(algo.adapt(ep.support_x, ep.support_y), ep.query_x)
        correct, number = algo.instance_correct(ep, episode_generator(0, 0, "sequence"))
    assert out.shape == (9, 3)
    assert torch.allclose(out.exp().sum(-1), torch.ones(9))
    assert correct.shape == number.shape == (15,)
    assert sorted(number.tolist()) == sorted([1, 2, 3, 4, 5] * 3)


def test_bad_configurations_are_clear_errors():
    backbone = create_backbone("identity", in_features=4)
    with pytest.raises(ConfigError, match="memory slots"):
        MANN(backbone, ways=20, slots=16, heads=2)
    with pytest.raises(ConfigError, match="cannot present each of 5 classes"):
        MANN(backbone, ways=5, steps=3)
    with pytest.raises(ConfigError, match="more slots than heads"):
        MANN(backbone, ways=2, slots=4, heads=4)
    with pytest.raises(ConfigError, match="strength_init must exceed 1"):
        MANN(backbone, ways=2, strength_init=0.5)
    with pytest.raises(ConfigError, match="write must be"):
        MANN(backbone, ways=2, write="value")
    sharp = MANN(backbone, ways=2, width=4, heads=2, strength_init=7.0)
    bias = sharp.interface.bias.view(2, 10)[:, -1]  # key 4, add 4, gate, strength
    assert torch.allclose(torch.nn.functional.softplus(bias) + 1, torch.full((2,), 7.0))
    algo = MANN(backbone, ways=2, controller=8, slots=8, width=4, heads=1)
    ep = Episode(
        torch.randn(3, 4), torch.tensor([0, 1, 2]), torch.randn(3, 4), torch.tensor([0, 1, 2])
    )
    with pytest.raises(DataError, match="at most 2 classes"):
        algo.meta_loss(ep)
    algo.steps = 10
    ep = Episode(torch.randn(2, 4), torch.tensor([0, 1]), torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(DataError, match="need 10 examples"):
        algo.meta_loss(ep)


@needs_omniglot
def test_mann_learns_the_label_path_on_omniglot():
    """Half a minute of training. Binding images to labels in memory takes thousands of steps
    (benchmarks/model_based.py measures it); what a short run must learn is the one-step-late
    label input: the first presentation of a class is then a guess among the labels not yet seen
    in the episode, above chance (20%) and at best (1/5 + 1/4 + 1/3 + 1/2 + 1) / 5 = 0.457."""
    from metakit.data.omniglot import omniglot
    from metakit.engine.evaluate import evaluate_instances

    torch.manual_seed(0)
    data = omniglot(split="vinyals", image_size=20, download=False)
    train = data.sampler("train", 5, 1, 4, seed=0)
    algo = MANN(create_backbone("identity", in_channels=1, image_size=20), ways=5, controller=100)
    opt = torch.optim.Adam(algo.parameters(), 3e-3)
    losses = []
    for step in range(150):
        loss, _ = algo.meta_loss(train.batch(step * 16, 16))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(algo.parameters(), 10.0)
        opt.step()
        losses.append(loss.item())
    result = evaluate_instances(algo, data.sampler("test", 5, 1, 9, seed=0), episodes=50)
    assert 0.3 < result["1"]["accuracy"] < 0.55
    assert sum(losses[-20:]) < sum(losses[:20])
