import pytest

from metakit.config import (
    Config,
    apply_overrides,
    list_recipes,
    load_config,
    recipe_kind,
    recipe_path,
)
from metakit.errors import ConfigError
from metakit.l2o.train import load_l2o_config


def test_shipped_recipes_load():
    names = list_recipes()
    for required in (
        "protonet-omniglot-5w1s",
        "protonet-omniglot-5w5s",
        "protonet-omniglot-20w1s",
        "protonet-omniglot-20w5s",
    ):
        assert required in names
    for name in names:
        path = recipe_path(name)
        cfg = load_l2o_config(path) if recipe_kind(path) == "l2o" else load_config(name)
        assert cfg.name == name and cfg.description
    assert {"l2o-quadratic", "l2o-mnist"} <= set(names)
    with pytest.raises(ConfigError, match="l2o"):
        load_config("l2o-quadratic")


def test_overrides_are_typed():
    cfg = load_config(
        "protonet-omniglot-5w1s",
        ["train.lr=1e-4", "train.ways=20", "seed=7", "algorithm.distance=cosine"],
    )
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.ways == 20 and cfg.seed == 7
    assert cfg.algorithm["distance"] == "cosine"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.wayz=3"], "unknown key 'wayz' in config.train"),
        (["train.ways=lots"], "must be int"),
        (["train.lr=-1"], "lr must be positive"),
        (["trainlr"], "key=value"),
        (["train.optimizer=rmsprop"], "must be one of"),
    ],
)
def test_bad_overrides_are_clear(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("protonet-omniglot-5w1s", overrides)


def test_unknown_recipe_lists_choices():
    with pytest.raises(ConfigError, match="available: .*protonet-omniglot-5w1s"):
        load_config("protonet-mars-5w1s")


def test_round_trip():
    cfg = load_config("protonet-omniglot-20w5s")
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_apply_overrides_nested_error():
    with pytest.raises(ConfigError, match="not a config section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_lr_mult_gives_prefixed_parameters_their_own_rate():
    import torch

    from metakit.algorithms import ProtoNet
    from metakit.engine.trainer import learning_rate, make_optimizer, set_learning_rate
    from metakit.models import create_backbone

    model = ProtoNet(create_backbone("mlp", in_features=4, hidden=[3]), "cosine", learn_scale=True)
    config = load_config("protonet-omniglot-5w1s", ["train.optimizer=sgd", "train.momentum=0"])
    config.train.lr_mult = {"log_scale": 100.0}
    optimizer = make_optimizer(config, model)
    assert sorted(g["lr_mult"] for g in optimizer.param_groups) == [1.0, 100.0]
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    set_learning_rate(optimizer, learning_rate(config, 0))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    lr = config.train.lr
    for name, p in model.named_parameters():
        step = (before[name] - p.detach()).flatten()[0].item()
        assert step == pytest.approx(lr * (100 if name == "log_scale" else 1), rel=1e-4), name


def test_bad_lr_mult_is_a_clear_error():
    from metakit.algorithms import ProtoNet
    from metakit.engine.trainer import make_optimizer
    from metakit.models import create_backbone

    with pytest.raises(ConfigError, match="lr_mult values must be positive"):
        load_config("protonet-omniglot-5w1s", ["train.lr_mult={log_scale: -1}"])
    model = ProtoNet(create_backbone("mlp", in_features=4, hidden=[3]))
    config = load_config("protonet-omniglot-5w1s", ["train.lr_mult={temperature: 10}"])
    with pytest.raises(ConfigError, match="'temperature' matches no parameter"):
        make_optimizer(config, model)
