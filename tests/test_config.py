import pytest

from metakit.config import Config, apply_overrides, list_recipes, load_config
from metakit.errors import ConfigError


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
        cfg = load_config(name)
        assert cfg.name == name and cfg.description


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
