"""Learning to design, part 1: the controller, REINFORCE, the weight-sharing supernet, the search
run (resume, history, report) and the `searched` backbone."""

import json

import pytest
import torch
from typer.testing import CliRunner

from metakit import create_backbone
from metakit.cli import app
from metakit.errors import ConfigError
from metakit.search.arch import ArchSearch, load_search_config, read_history, search_architecture
from metakit.search.child import ImageData
from metakit.search.controller import Controller, RandomPolicy, Reinforce
from metakit.search.report import search_report
from metakit.search.space import Decision, SearchSpace, categorical, skip
from metakit.search.supernet import Architecture, ChildNet, Supernet, macro_space

TOY = SearchSpace(tuple(categorical(f"d{i}", ["a", "b", "c", "d"]) for i in range(3)))


def test_sampling_is_reproducible_and_log_probs_match_the_tokens():
    torch.manual_seed(0)
    controller = Controller(macro_space(4), hidden=16)
    a = controller.sample(5, torch.Generator().manual_seed(3))
    b = controller.sample(5, torch.Generator().manual_seed(3))
    c = controller.sample(5, torch.Generator().manual_seed(4))
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    scored = controller(tokens=a.tokens)
    assert torch.allclose(scored.log_prob, a.log_prob, atol=1e-6)
    # by hand for the first design: the sum over decisions of log softmax at the chosen token
    tokens = a.tokens[0]
    x, h, c_ = controller.start[None], torch.zeros(1, 16), torch.zeros(1, 16)
    total = 0.0
    for i, t in enumerate(tokens.tolist()):
        h, c_ = controller.cell(x, (h, c_))
        total += float(torch.log_softmax(controller.logits(h, i).detach(), -1)[0, t])
        x = controller.embeddings[i](tokens[i : i + 1])
    assert abs(total - float(a.log_prob[0].detach())) < 1e-5
    for row in a.tokens.tolist():  # every token is a valid choice
        macro_space(4).check(row)


def test_reinforce_gradient_has_the_right_sign():
    torch.manual_seed(0)
    for reward, direction in ((1.0, 1), (-1.0, -1)):
        controller = Controller(TOY, hidden=8)
        reinforce = Reinforce(controller, lr=0.05, entropy_weight=0.0)
        reinforce.baseline = 0.0
        design = [1, 2, 3]
        before = controller.probabilities(design)
        sample = controller(tokens=torch.tensor([design]))
        reinforce.step(sample, torch.tensor([reward]))
        after = controller.probabilities(design)
        assert (after - before) * direction > 0


def test_controller_learns_the_best_design_of_a_toy_space():
    torch.manual_seed(0)
    target = torch.tensor([2, 0, 3])
    controller = Controller(TOY, hidden=16, tanh_constant=None)
    reinforce = Reinforce(controller, lr=0.02, baseline_decay=0.9)
    gen = torch.Generator().manual_seed(0)
    start = controller.probabilities(target.tolist())
    for _ in range(300):
        sample = controller.sample(4, gen)
        rewards = (sample.tokens == target).float().mean(1)
        reinforce.step(sample, rewards)
    assert start < 0.05  # uniform: 1/64
    assert controller.probabilities(target.tolist()) > 0.5
    random = RandomPolicy(TOY).sample(1000, torch.Generator().manual_seed(0))
    assert (random.tokens == target).all(1).float().mean() < 0.05


def test_bad_spaces_and_architectures_get_clear_errors():
    with pytest.raises(ConfigError, match="no choices"):
        Decision("op0", ())
    with pytest.raises(ConfigError, match="earlier layer"):
        skip(layer=2, source=3)
    with pytest.raises(ConfigError, match="earlier layer"):
        skip(layer=2, source=2)
    with pytest.raises(ConfigError, match="unique"):
        SearchSpace((categorical("a", ["x"]), categorical("a", ["y"])))
    with pytest.raises(ConfigError, match="at least one decision"):
        SearchSpace(())
    with pytest.raises(ConfigError, match="skips come from earlier layers"):
        Architecture.parse("conv3x3/conv3x3<1")
    with pytest.raises(ConfigError, match="unknown op"):
        Architecture.parse("conv3x3/conv7x7")
    with pytest.raises(ConfigError, match="unknown ops"):
        macro_space(3, ["conv3x3", "dilated"])
    with pytest.raises(ConfigError, match="policy"):
        load_search_config(overrides=["policy=greedy"])


def test_architecture_round_trips_through_tokens_and_text():
    space = macro_space(5)
    tokens = [int(t) for t in torch.randint(0, 2, (len(space),))]
    arch = Architecture.from_tokens(space, tokens)
    assert Architecture.parse(str(arch)) == arch
    assert len(space) == 5 + (0 + 0 + 1 + 2 + 3)  # ops, then skips from layers 0..i-2
    text = "conv3x3/sep5x5/maxpool3x3<0/avgpool3x3<0,1"
    assert str(Architecture.parse(text)) == text


def test_supernet_shares_weights_and_unused_ops_get_no_gradient():
    torch.manual_seed(0)
    net = Supernet(in_channels=1, channels=8, layers=3, num_classes=4)
    x = torch.randn(6, 1, 16, 16)
    a = Architecture.parse("conv3x3/sep3x3/conv5x5<0")
    b = Architecture.parse("conv3x3/maxpool3x3/sep5x5")
    shared = net.layers[0]["conv3x3"][1].weight
    net(x, a).sum().backward()
    grad_a = shared.grad.clone()
    assert net.layers[1]["sep3x3"][1].weight.grad is not None
    for layer, op in ((1, "conv3x3"), (1, "sep5x5"), (2, "conv3x3"), (2, "sep5x5")):
        for p in net.layers[layer][op].parameters():
            assert p.grad is None, (layer, op)
    net.zero_grad(set_to_none=True)
    net(x, b).sum().backward()
    assert shared.grad is not None and not torch.equal(shared.grad, grad_a)
    assert net.layers[1]["sep3x3"][1].weight.grad is None
    # an update through child b moves the tensor child a reads
    before = net(x, a).detach()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    opt.step()
    assert not torch.allclose(net(x, a), before)


def test_child_net_matches_the_supernet_with_the_same_weights():
    torch.manual_seed(0)
    arch = Architecture.parse("conv3x3/sep5x5/avgpool3x3<0")
    supernet = Supernet(in_channels=1, channels=8, layers=3, num_classes=4)
    child = ChildNet(arch, in_channels=1, channels=8, num_classes=4)
    child.stem.load_state_dict(supernet.stem.state_dict())
    child.classifier.load_state_dict(supernet.classifier.state_dict())
    for i, op in enumerate(arch.ops):
        convs = [
            [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
            for net in (child.layers[i], supernet.layers[i][op])
        ]
        for c_child, c_super in zip(*convs, strict=True):
            c_child.weight.data.copy_(c_super.weight.data)
    # batch statistics, as the supernet always uses; the child's fresh affine BN is the identity
    child.train()
    x = torch.randn(5, 1, 16, 16)
    assert torch.allclose(child(x), supernet(x, arch), atol=1e-5)


def test_searched_backbone_builds_from_text_and_from_a_run(tmp_path):
    bb = create_backbone("searched", arch="conv3x3/sep5x5/maxpool3x3<0", channels=16)
    assert bb.embed(torch.rand(3, 1, 28, 28)).shape == (3, 16) and bb.out_dim == 16
    (tmp_path / "arch.json").write_text(json.dumps({"arch": "sep3x3/conv5x5"}))
    from_run = create_backbone("searched", arch=str(tmp_path), channels=8, num_classes=3)
    assert from_run(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    with pytest.raises(ConfigError, match="does not exist"):
        create_backbone("searched", arch=str(tmp_path / "missing.json"))


def synthetic_data(n=240, size=16, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(classes, (n,), generator=g)
    x = torch.randn(n, 1, size, size, generator=g) * 0.5
    i = torch.arange(size)
    textures = [  # a class-dependent texture, learnable in a few steps: a conv net sees it
        (i[:, None] % 2).float().expand(size, size),  # horizontal stripes
        (i[None, :] % 2).float().expand(size, size),  # vertical stripes
        ((i[:, None] + i[None, :]) % 2).float(),  # checkerboard
        torch.zeros(size, size),  # plain
    ]
    for c in range(classes):
        x[y == c, 0] += 1.5 * textures[c % 4]
    third = n // 3
    return ImageData(
        x[:third], y[:third], x[third : 2 * third], y[third : 2 * third], x[2 * third :],
        y[2 * third :], classes, "synthetic",
    )  # fmt: skip


TINY = [
    "layers=3", "channels=8", "epochs=4", "shared_steps=3", "batch_size=16",
    "controller_steps=3", "reward_images=32", "derive_samples=4", "derive_images=64",
    "retrain_epochs=0.5", "budget=0",
]  # fmt: skip


def test_search_resume_equals_an_uninterrupted_search(tmp_path, monkeypatch):
    data = synthetic_data()
    config = load_search_config(overrides=TINY)
    full = search_architecture(config, tmp_path / "full", progress=False, data=data)

    calls = {"n": 0}
    original = ArchSearch.evaluate_children

    def crash_in_epoch_three(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return original(self)

    monkeypatch.setattr(ArchSearch, "evaluate_children", crash_in_epoch_three)
    with pytest.raises(RuntimeError, match="simulated crash"):
        search_architecture(
            load_search_config(overrides=TINY), tmp_path / "cut", progress=False, data=data
        )
    monkeypatch.setattr(ArchSearch, "evaluate_children", original)
    resumed = search_architecture(
        load_search_config(overrides=TINY), tmp_path / "cut", resume=True, progress=False, data=data
    )
    strip = ("search_seconds", "retrain_seconds")
    assert {k: v for k, v in full.items() if k not in strip} == {
        k: v for k, v in resumed.items() if k not in strip
    }
    assert read_history(tmp_path / "full") == read_history(tmp_path / "cut")
    assert len(read_history(tmp_path / "full")) == 4 * 3 + 4  # evaluations + derived samples
    weights = {}
    for name in ("full", "cut"):
        from safetensors.torch import load_file

        weights[name] = load_file(tmp_path / name / "checkpoints" / "last.safetensors")
    controller_keys = [k for k in weights["full"] if k.startswith("controller.")]
    assert controller_keys
    for k in weights["full"]:
        assert torch.equal(weights["full"][k], weights["cut"][k]), k
    with pytest.raises(ConfigError, match="already holds a run"):
        search_architecture(config, tmp_path / "full", progress=False, data=data)


def test_random_search_has_the_same_evaluations_and_a_report(tmp_path):
    data = synthetic_data()
    result = search_architecture(
        load_search_config(overrides=[*TINY, "policy=random"]), tmp_path, progress=False, data=data
    )
    assert result["evaluations"] == 12 and result["policy"] == "random"
    assert 0 <= result["test_accuracy"] <= 1 and result["params"] > 0
    Architecture.parse(result["arch"])
    assert json.loads((tmp_path / "arch.json").read_text())["arch"] == result["arch"]
    report = search_report(tmp_path)
    assert (tmp_path / "reward.png").stat().st_size > 1000
    md = (tmp_path / "report.md").read_text()
    assert all(t["design"] in md for t in report["top"])
    assert report["evaluations"] == 12 and len(report["top"]) <= 10
    assert report["top"][0]["reward"] >= report["top"][-1]["reward"]


def test_supernet_training_lifts_the_reward_on_learnable_data():
    data = synthetic_data(n=600)
    config = load_search_config(overrides=[*TINY, "shared_steps=40", "controller_steps=8"])
    search = ArchSearch(config, data)
    before = sum(r["reward"] for r in search.evaluate_children()) / 8
    search.train_shared()
    after = sum(r["reward"] for r in search.evaluate_children()) / 8
    assert after > before + 0.2 and after > 0.6


@pytest.mark.slow
def test_cli_search_arch_on_fashion_mnist_and_report(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["search", "arch", "--out", str(out), "--budget", "0", "--no-progress", "--seed", "1"]
    for item in TINY[:-1]:
        args += ["--set", item]
    args += ["--set", "retrain_epochs=0.01", "--set", "val_images=1000"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["dataset"] == "fashion-mnist" and summary["evaluations"] == 12
    assert summary["test_accuracy"] > 0.1  # ten classes; a few steps already beat chance
    bad = runner.invoke(app, ["search", "arch", "--out", str(out), "--resume", "--seed", "2"])
    assert bad.exit_code != 0 and "only --budget may change" in bad.output
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert (out / "reward.png").exists() and (out / "report.md").exists()
