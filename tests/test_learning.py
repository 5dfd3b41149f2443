"""Real learning on real Omniglot: a short run must clearly learn (not a timing benchmark)."""

from metakit.config import Config
from metakit.engine.build import build_algorithm
from metakit.engine.evaluate import evaluate
from metakit.engine.trainer import train
from metakit.learner import load
from tests.conftest import needs_omniglot


@needs_omniglot
def test_protonet_learns_omniglot_in_300_episodes(tmp_path, omniglot):
    config = Config.from_dict(
        {
            "name": "learning-test",
            "seed": 0,
            "device": "cpu",
            "data": {"name": "omniglot", "split": "vinyals", "image_size": 28, "download": False},
            "train": {
                "ways": 20,
                "shots": 1,
                "queries": 5,
                "episodes": 300,
                "lr_step": 200,
                "val_every": 300,
                "val_episodes": 50,
            },
        }
    )
    train(config, tmp_path, progress=False)
    learner = load(tmp_path, checkpoint="last")
    test_episodes = omniglot.sampler("test", 5, 1, 15, seed=0)
    result = evaluate(learner.algorithm, test_episodes, episodes=200)
    assert result.accuracy >= 0.85, result.summary()
    # an untrained network of the same shape is far worse: the run really learned
    untrained = build_algorithm(config, omniglot.inputs)
    baseline = evaluate(untrained, test_episodes, episodes=200)
    assert result.accuracy > baseline.accuracy + 0.05
