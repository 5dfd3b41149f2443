import io
import zipfile

import pytest
import torch
from PIL import Image

import metakit
from metakit.data import TaskSampler
from metakit.data.omniglot import archive_paths
from metakit.engine.trainer import train
from metakit.errors import DataError, MetakitError
from tests.conftest import needs_omniglot, tiny_config

pytestmark = needs_omniglot


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(tiny_config(episodes=3), out, progress=False)
    return out


def test_fit_predict_with_tensors(run_dir, omniglot):
    learner = metakit.load(run_dir)
    ep = TaskSampler(omniglot.split("test"), 5, 2, 3, seed=1).sample(0)
    learner.fit(ep.support_x, ep.support_y)
    proba = learner.predict_proba(ep.query_x)
    assert proba.shape == (15, 5)
    assert torch.allclose(proba.sum(1), torch.ones(15), atol=1e-5)
    pred = learner.predict(ep.query_x)
    assert torch.equal(pred, proba.argmax(1))
    # the same numbers as the algorithm used directly, as in evaluation
    algo = learner.algorithm
    with torch.inference_mode():
        logits = algo.logits(algo.adapt(ep.support_x, ep.support_y), ep.query_x)
    assert torch.allclose(proba, logits.softmax(-1), atol=1e-6)
    assert learner.embed(ep.query_x).shape == (15, algo.backbone.out_dim)


def test_string_labels_and_uint8_inputs(run_dir, omniglot):
    learner = metakit.load(run_dir, checkpoint="last")
    ds = omniglot.split("test")
    sup = torch.stack([ds.images[ds.class_index[c][0]] for c in range(3)])  # uint8 raw images
    learner.fit(sup, ["alpha", "beta", "gamma"])
    assert learner.classes_ == ["alpha", "beta", "gamma"]
    assert learner.predict(sup) == [
        "alpha",
        "beta",
        "gamma",
    ]  # support points classify as themselves


def test_pil_images_and_paths_get_training_preprocessing(run_dir, omniglot, tmp_path):
    """Raw 105x105 PNGs from the archive, as PIL images or files, match the cached tensors."""
    learner = metakit.load(run_dir)
    path = archive_paths(download=False)["evaluation"]
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))[:4]
        pils = [Image.open(io.BytesIO(zf.read(n))) for n in names]
    files = []
    for i, img in enumerate(pils):
        files.append(tmp_path / f"{i}.png")
        img.save(files[-1])
    from_pil = learner.preprocess(pils)
    from_files = learner.preprocess([str(f) for f in files])
    assert torch.equal(from_pil, from_files)
    from metakit.data.omniglot import load_characters

    images, chars = load_characters(28, download=False)
    row = next(i for i, c in enumerate(chars) if c.startswith("evaluation/"))
    assert torch.equal((from_pil * 255).round().to(torch.uint8), images[row, :4])
    learner.fit(files[:2], [0, 1])
    assert learner.predict(pils[:2]).tolist() == [0, 1]


def test_load_uses_the_recipes_checkpoint(run_dir, tmp_path):
    import shutil

    import yaml

    from metakit.engine.checkpoint import read_meta

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "checkpoints" / "best.safetensors").unlink()
    with pytest.raises(MetakitError, match="no 'best' checkpoint"):
        metakit.load(copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["eval"]["checkpoint"] = "last"
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    learner = metakit.load(copy)  # eval.checkpoint: last → no best needed
    last = read_meta(copy / "checkpoints" / "last.safetensors")
    assert learner.algorithm is not None and last["step"] == 3


def test_learner_errors(run_dir, tmp_path):
    learner = metakit.load(run_dir)
    with pytest.raises(MetakitError, match="call fit"):
        learner.predict(torch.rand(2, 1, 28, 28))
    with pytest.raises(DataError, match=r"expected images of shape \[N, 1, 28, 28\]"):
        learner.fit(torch.rand(2, 3, 32, 32), [0, 1])
    with pytest.raises(DataError, match="2 inputs but 3 labels"):
        learner.fit(torch.rand(2, 1, 28, 28), [0, 1, 2])
    with pytest.raises(DataError, match="does not exist"):
        learner.fit([tmp_path / "missing.png"], [0])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read image"):
        learner.fit([bad], [0])
