"""Training on torch.distributed: 1 and 2 gloo processes on loopback give the same run."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from metakit.engine.build import load_run
from metakit.engine.distributed import Context
from metakit.errors import ConfigError
from tests.conftest import needs_omniglot

pytestmark = [needs_omniglot, pytest.mark.slow]

# without the convolution biases that BatchNorm cancels: their gradient is rounding noise, which
# Adam turns into learning-rate-sized steps, so two summation orders drift apart through them
# (measured: 1e-3 after 2 MAML steps with them, 1e-7 after 20 without)
RECIPES = {
    "maml": (  # second order, meta-batch 8
        "maml-omniglot-5w1s",
        ["backbone.hidden=16", "backbone.bias=false", "train.meta_batch=8", "train.queries=5",
         "train.episodes=20", "train.val_every=10", "train.val_episodes=8", "train.log_every=5"],
    ),
    "protonet": (
        "protonet-omniglot-5w1s-quick",
        ["backbone.hidden=16", "backbone.bias=false", "train.ways=10", "train.meta_batch=2",
         "train.episodes=20", "train.val_every=10", "train.val_episodes=8", "train.log_every=5"],
    ),
}  # fmt: skip


def metakit(*args, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "metakit.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=600,
    )
    return proc


def train(out, name, nproc=1, episodes=None, resume=False, env=None):
    recipe, sets = RECIPES[name]
    sets = [*sets, *([f"train.episodes={episodes}"] if episodes else [])]
    args = ["train", recipe, "--out", str(out), "--no-progress", "--nproc", str(nproc)]
    args += [x for s in sets for x in ("--set", s)] if not resume else ["--resume"]
    if resume and episodes:
        args += ["--set", f"train.episodes={episodes}"]
    return metakit(*args, env=env)


def parameters(run_dir):
    _, algorithm, _, meta = load_run(run_dir, "last", "cpu", [])
    return {k: v.detach() for k, v in algorithm.named_parameters()}, meta


def assert_same(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), (k, (a[k] - b[k]).abs().max())


@pytest.mark.parametrize("name", ["maml", "protonet"])
def test_one_and_two_processes_train_the_same_parameters(tmp_path, name):
    one = train(tmp_path / "one", name)
    two = train(tmp_path / "two", name, nproc=2)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    s1, s2 = json.loads(one.stdout.splitlines()[-1]), json.loads(two.stdout.splitlines()[-1])
    assert (s1["processes"], s2["processes"], s1["steps"], s2["steps"]) == (1, 2, 20, 20)
    p1, m1 = parameters(tmp_path / "one")
    p2, m2 = parameters(tmp_path / "two")
    assert_same(p1, p2)
    if name == "maml":  # batch statistics at test time: the same validation episodes and scores
        assert abs(m1["best_metric"] - m2["best_metric"]) < 1e-6
    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "val"] == [10, 20]  # one writer: rank 0


def test_resume_across_world_sizes(tmp_path):
    full = train(tmp_path / "full", "protonet")
    assert full.returncode == 0, full.stderr[-2000:]
    # 10 steps in one process, then 10 more in two; and the other way round
    for first, second, out in ((1, 2, "a"), (2, 1, "b")):
        start = train(tmp_path / out, "protonet", nproc=first, episodes=10)
        assert start.returncode == 0, start.stderr[-2000:]
        rest = train(tmp_path / out, "protonet", nproc=second, episodes=20, resume=True)
        assert rest.returncode == 0, rest.stderr[-2000:]
        assert_same(parameters(tmp_path / "full")[0], parameters(tmp_path / out)[0])


def test_a_failing_rank_stops_the_run_and_keeps_the_checkpoint(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import os
            if os.environ.get("RANK") == "1":
                import metakit.engine.distributed as d
                original, calls = d.average_gradients, [0]
                def failing(params, ctx):
                    calls[0] += 1
                    if calls[0] == 12:
                        raise RuntimeError("injected failure on rank 1")
                    return original(params, ctx)
                d.average_gradients = failing
            """
        )
    )
    env = {"PYTHONPATH": f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = train(tmp_path / "run", "protonet", nproc=2, env=env)
    assert run.returncode == 2
    assert "injected failure on rank 1" in run.stderr
    assert "error: 2-process run failed: rank 1 failed first" in run.stderr
    assert "--resume" in run.stderr
    _, meta = parameters(tmp_path / "run")  # the step-10 checkpoint is whole and loads
    assert meta["step"] == 10
    rest = train(tmp_path / "run", "protonet", nproc=2, resume=True)
    assert rest.returncode == 0, rest.stderr[-2000:]
    assert json.loads(rest.stdout.splitlines()[-1])["steps"] == 20


def test_sharded_evaluation_equals_one_process(tmp_path):
    run = train(tmp_path / "run", "protonet", episodes=10)
    assert run.returncode == 0, run.stderr[-2000:]
    args = ["eval", str(tmp_path / "run"), "--json", "--no-progress", "--episodes", "30"]
    one = metakit(*args)
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "metakit.cli", *args],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a, b = json.loads(one.stdout.splitlines()[-1]), json.loads(two.stdout.splitlines()[-1])
    assert a["episodes"] == b["episodes"] == 30
    assert abs(a["accuracy"] - b["accuracy"]) < 1e-9 and abs(a["ci95"] - b["ci95"]) < 1e-9


def test_meta_batch_must_split_evenly():
    assert Context(1, 2).shard(8) == (4, 4)
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        Context(0, 3).shard(8)
