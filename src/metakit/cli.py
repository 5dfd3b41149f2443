"""The `metakit` command: train, eval, report, data, recipes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from metakit.errors import MetakitError

app = typer.Typer(
    help="Meta-learning and transfer learning on PyTorch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect and fetch datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
search_app = typer.Typer(
    help="Learning to design: search with an RNN controller.", no_args_is_help=True
)
app.add_typer(search_app, name="search")


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def train(
    recipe: Annotated[
        str, typer.Argument(help="Recipe name (see `metakit recipes`) or YAML file.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="Override: key=value (repeatable).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out where it stopped.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    nproc: Annotated[
        int,
        typer.Option(
            help="Processes on this machine (torch.distributed via torchrun; each step's "
            "meta-batch is shared between them). For several machines, launch "
            "`torchrun ... -m metakit.cli train ...` yourself."
        ),
    ] = 1,
) -> None:
    """Train a recipe into a run directory (config.yaml, metrics.jsonl, checkpoints/, tb/)."""
    from metakit.config import load_config, recipe_kind, recipe_path
    from metakit.engine.trainer import resume_config
    from metakit.engine.trainer import train as run_training

    if nproc < 1:
        fail(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        argv = [recipe, "--out", str(out), *[x for o in set_ or [] for x in ("--set", o)]]
        argv += ["--resume"] * resume + ["--no-progress"] * (not progress)
        launch(nproc, ["train", *argv])
        return
    overrides = list(set_ or [])
    path = out / "config.yaml" if resume and (out / "config.yaml").exists() else None
    if recipe_kind(path or recipe_path(recipe)) == "l2o":
        from metakit.l2o.train import load_l2o_config, train_l2o

        l2o = load_l2o_config(path or recipe_path(recipe), overrides)
        try:
            typer.echo(json.dumps(train_l2o(l2o, out, resume=resume, progress=progress)))
        except KeyboardInterrupt as e:
            fail(str(e) or "interrupted", code=130)
        return
    config = resume_config(out, overrides) if resume else load_config(recipe, overrides)
    try:
        summary = run_training(config, out, resume=resume, progress=progress)
    except KeyboardInterrupt as e:
        fail(str(e) or "interrupted", code=130)
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(json.dumps(summary))


def launch(nproc: int, command: list[str]) -> None:
    """Run `metakit COMMAND` in `nproc` local processes under torchrun (standalone rendezvous on
    this machine). If one process fails, torchrun stops the others; its error is raised here."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--standalone", f"--nproc-per-node={nproc}", "-m", "metakit.cli", *command])
    except ChildFailedError as e:
        rank, first = e.get_first_failure()
        fail(
            f"{nproc}-process run failed: rank {rank} failed first (exit code {first.exitcode}) "
            "and the other processes were stopped; its error is printed above. The last "
            "checkpoint (if any) is intact: fix the cause and continue with --resume."
        )


@app.command("eval")
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `metakit train`.")],
    split: Annotated[
        str | None, typer.Option(help="Split to evaluate (default: the recipe's).")
    ] = None,
    ways: Annotated[int | None, typer.Option(help="N classes per episode.")] = None,
    shots: Annotated[int | None, typer.Option(help="K support examples per class.")] = None,
    queries: Annotated[int | None, typer.Option(help="Query examples per class.")] = None,
    episodes: Annotated[int | None, typer.Option(help="Number of test episodes.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the test episodes.")] = None,
    checkpoint: Annotated[
        str | None, typer.Option(help="best or last (default: the recipe's eval.checkpoint).")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto.")] = "auto",
    adapt_steps: Annotated[
        str | None,
        typer.Option(help="Regression: adaptation steps to report, e.g. 1,5,10."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Test-time override, e.g. algorithm.test_inner_lr=0.02."),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            help="How to classify: the run's own algorithm (default), or nearest-centroid on "
            "its backbone features (SimpleShot)."
        ),
    ] = None,
    norm: Annotated[
        str, typer.Option(help="nearest-centroid features: l2, cl2n (centred on train), none.")
    ] = "l2",
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Evaluate a trained run on fixed-seed episodes: mean accuracy (regression: MSE after each
    of eval.adapt_steps adaptation steps) and its 95% CI."""
    from metakit.config import recipe_kind
    from metakit.engine import distributed
    from metakit.engine.build import build_dataset, load_run, read_run_config, resolve_device
    from metakit.engine.evaluate import evaluate, evaluate_regression

    if (run_dir / "config.yaml").exists() and recipe_kind(run_dir / "config.yaml") == "l2o":
        from metakit.l2o.evaluate import evaluate_run

        result = evaluate_run(run_dir, checkpoint or "best", problems=episodes, seed=seed)
        typer.echo(json.dumps(result) if json_ else json.dumps(result, indent=2))
        return
    if checkpoint is None:
        checkpoint = read_run_config(run_dir).eval.checkpoint
    config, algorithm, _, meta = load_run(run_dir, checkpoint, "cpu", list(set_ or []))
    own = config.algorithm.get("name")
    if method not in (None, own, "nearest-centroid"):
        fail(f"--method must be nearest-centroid (or {own!r}, the run's own), got {method!r}")
    dev = resolve_device(device)
    algorithm.to(dev)
    # under torchrun (`torchrun --nproc-per-node N -m metakit.cli eval RUN`) the processes
    # share the episodes; rank 0 prints the gathered result
    ctx = distributed.setup(dev)
    e = config.eval
    split = split or e.split
    dataset = build_dataset(config)
    if method == "nearest-centroid":
        if meta.get("task", "classification") != "classification":
            fail("--method nearest-centroid classifies; this run is a regression run")
        from metakit.algorithms.nearest_centroid import NORMS, NearestCentroid, mean_feature

        if norm not in NORMS:
            fail(f"--norm must be one of {', '.join(NORMS)}, got {norm!r}")
        center = (
            mean_feature(algorithm.backbone, dataset.split(config.train.split), seed=config.seed)
            if norm == "cl2n"
            else None
        )
        algorithm = NearestCentroid(algorithm.backbone, norm=norm, center=center).to(dev).eval()
    sampler = dataset.sampler(
        split,
        ways or e.ways,
        shots or e.shots,
        queries or e.queries,
        seed=e.seed if seed is None else seed,
    )
    common = {
        "episodes": episodes or e.episodes,
        "split": split,
        "device": dev,
        "progress": progress and not json_,
    }
    if meta.get("task", "classification") == "regression":
        steps = [int(s) for s in adapt_steps.split(",")] if adapt_steps else e.adapt_steps
        result = evaluate_regression(algorithm, sampler, steps=steps, **common)
    else:
        result = evaluate(algorithm, sampler, **common)
    extra: dict[str, object] = {}
    if hasattr(algorithm, "instance_correct"):  # sequence learners: the paper's table
        from metakit.engine.evaluate import evaluate_instances

        extra["instance_accuracy"] = evaluate_instances(
            algorithm, sampler, **common_no_split(common)
        )
    out = {
        **result.to_dict(),
        "algorithm": own,
        "method": method or own,
        **({"norm": norm} if method == "nearest-centroid" else {}),
        "bn": config.algorithm.get("bn", "transductive") if hasattr(algorithm, "bn") else None,
        "checkpoint": checkpoint,
        "step": meta["step"],
        "run": str(run_dir),
        "overrides": list(set_ or []),
        **extra,
    }
    distributed.teardown()
    if not ctx.main:
        return
    if json_:
        typer.echo(json.dumps(out))
    else:
        typer.echo(result.summary())
        for k, row in out.get("instance_accuracy", {}).items():
            if row["accuracy"] is None:
                continue
            typer.echo(
                f"  instance {k}: {100 * row['accuracy']:.2f}% ± {100 * row['ci95']:.2f} "
                f"({row['episodes']} episodes)"
            )


def common_no_split(common: dict) -> dict:
    return {k: v for k, v in common.items() if k != "split"}


@app.command()
def transfer(
    source: Annotated[
        Path, typer.Option("--from", help="A trained run whose backbone is the source model.")
    ],
    target: Annotated[str, typer.Option(help="Target dataset, e.g. mnist or fashion-mnist.")],
    mode: Annotated[
        str, typer.Option(help="extract (frozen features), finetune, or scratch (no transfer).")
    ] = "extract",
    freeze: Annotated[int, typer.Option(help="finetune: number of bottom blocks kept frozen.")] = 0,
    head: Annotated[str, typer.Option(help="New head: linear, cosine, or centroid.")] = "linear",
    steps: Annotated[
        int, typer.Option(help="Gradient steps fitting the head / fine-tuning.")
    ] = 100,
    lr: Annotated[
        float | None, typer.Option(help="Learning rate (default 0.1 extract, 1e-3 otherwise).")
    ] = None,
    decay: Annotated[
        float, typer.Option(help="finetune: lr factor per block below the head.")
    ] = 1.0,
    batch_size: Annotated[
        int, typer.Option(help="finetune/scratch: images per step (0 = whole support set).")
    ] = 0,
    split: Annotated[str | None, typer.Option(help="Target split (default: test).")] = None,
    ways: Annotated[int, typer.Option(help="N classes per episode.")] = 10,
    shots: Annotated[int, typer.Option(help="K labelled target examples per class.")] = 5,
    queries: Annotated[int, typer.Option(help="Query examples per class.")] = 15,
    episodes: Annotated[int, typer.Option(help="Number of target episodes.")] = 600,
    seed: Annotated[int, typer.Option(help="Seed of the episodes and fresh weights.")] = 0,
    checkpoint: Annotated[str, typer.Option(help="Source checkpoint: best or last.")] = "best",
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto.")] = "auto",
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Transfer a trained backbone to few-shot tasks of another dataset and report accuracy."""
    from metakit.transfer.evaluate import evaluate_transfer

    result = evaluate_transfer(
        source,
        target,
        mode=mode,
        split=split,
        ways=ways,
        shots=shots,
        queries=queries,
        episodes=episodes,
        seed=seed,
        checkpoint=checkpoint,
        device=device,
        progress=progress and not json_,
        head=head,
        freeze=freeze,
        steps=steps,
        lr=lr,
        decay=decay,
        batch_size=batch_size,
    )
    out = {
        **result.to_dict(),
        "source": str(source),
        "target": target,
        "mode": mode,
        "head": head,
        "freeze": freeze,
        "steps": steps,
        "batch_size": batch_size,
    }
    typer.echo(json.dumps(out) if json_ else result.summary())


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    support: Annotated[
        Path, typer.Option(help="Folder with one sub-folder of labelled images per class.")
    ],
    query: Annotated[
        list[Path], typer.Option(help="Image files or folders to classify (repeatable).")
    ],
    out: Annotated[
        Path | None, typer.Option(help="CSV file to write (default: print the CSV).")
    ] = None,
    checkpoint: Annotated[str | None, typer.Option(help="best or last.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto.")] = "cpu",
) -> None:
    """Classify new images with any trained run, adapting to a support folder: one CSV row
    per query (path, label, probability). Unreadable files are reported and skipped."""
    import csv
    import io

    import torch

    import metakit
    from metakit.data.folder import EXTENSIONS, read_folder
    from metakit.engine.build import resolve_device

    learner = metakit.load(run_dir, checkpoint, device=str(resolve_device(device)))
    if learner.preprocess is None:
        fail("predict classifies images; this run was not trained on images")
    shots = read_folder(support, learner.preprocess)
    learner.fit(shots.images, [shots.class_names[i] for i in shots.labels.tolist()])
    files: list[Path] = []
    for q in query:
        if q.is_dir():
            files += sorted(p for p in q.rglob("*") if p.suffix.lower() in EXTENSIONS)
        else:
            files.append(q)
    if not files:
        fail("no query images given (pass image files or folders with --query)")
    decoded, kept = [], []
    for path in files:
        try:
            decoded.append(learner.preprocess.load_uint8([path]))
            kept.append(path)
        except MetakitError as e:
            typer.echo(f"warning: skipped a query: {e}", err=True)
    if not kept:
        fail("none of the query images could be read")
    probs = learner.predict_proba(torch.cat(decoded))
    best, index = probs.max(-1)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["query", "label", "probability"])
    for path, p, i in zip(kept, best.tolist(), index.tolist(), strict=True):
        writer.writerow([str(path), learner.classes_[i], f"{p:.4f}"])
    if out is None:
        typer.echo(buffer.getvalue(), nl=False)
    else:
        out.write_text(buffer.getvalue())
        typer.echo(f"wrote {len(kept)} predictions to {out}", err=True)


@app.command()
def report(
    run_dirs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="A results folder (default benchmarks/results), a search run, or regression "
            "runs to compare (MAML and pretrained)."
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="PNG file to write (search runs: a folder, default the run)."
        ),
    ] = Path("adaptation.png"),
    task: Annotated[int, typer.Option(help="Index of the test task to draw.")] = 0,
    steps: Annotated[str, typer.Option(help="Adaptation steps to draw, comma-separated.")] = (
        "0,1,10"
    ),
    checkpoint: Annotated[str | None, typer.Option(help="best or last.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            help="RUN_INDEX:key=value test-time override, e.g. 1:algorithm.test_inner_lr=0.02.",
        ),
    ] = None,
) -> None:
    """Results folder: write report.html (self-contained) and report.md with every benchmark
    table, its plots, and each figure marked as meeting or missing its published number. Search
    run: write its reward curve (reward.png) and top-designs table (report.md). Regression
    runs: draw the adaptation plot (the true function, the K support points, and the predictions
    after 0, 1 and 10 steps, one panel per run)."""
    from metakit.report import adaptation_plot
    from metakit.search.report import is_search_run, search_report

    run_dirs = run_dirs or [Path("benchmarks/results")]
    if len(run_dirs) == 1 and is_results_folder(run_dirs[0]):
        from metakit.results_page import build_results_page

        target = None if out == Path("adaptation.png") else out
        typer.echo(json.dumps(build_results_page(run_dirs[0], target), indent=2))
        return
    if any(is_search_run(d) for d in run_dirs):
        if len(run_dirs) != 1:
            fail("give one search run directory at a time")
        target = None if out == Path("adaptation.png") else out
        typer.echo(json.dumps(search_report(run_dirs[0], target), indent=2))
        return

    overrides: list[list[str]] = [[] for _ in run_dirs]
    for item in set_ or []:
        index, _, setting = item.partition(":")
        if not index.isdigit() or int(index) >= len(run_dirs):
            fail(f"--set {item!r} must start with a run index 0..{len(run_dirs) - 1} and a colon")
        overrides[int(index)].append(setting)
    path = adaptation_plot(
        run_dirs,
        out,
        task=task,
        steps=[int(s) for s in steps.split(",")],
        checkpoint=checkpoint,
        overrides=overrides,
    )
    typer.echo(json.dumps({"written": str(path)}))


def is_results_folder(path: Path) -> bool:
    """A folder of benchmark results: JSON tables, not a run (no config.yaml)."""
    return path.is_dir() and not (path / "config.yaml").exists() and any(path.glob("*.json"))


@search_app.command("arch")
def search_arch(
    out: Annotated[Path, typer.Option("--out", "-o", help="Search run directory.")],
    budget: Annotated[
        float | None,
        typer.Option(help="Minutes for search + derive + retraining (default 45; 0: no limit)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the whole search.")] = None,
    policy: Annotated[
        str | None, typer.Option(help="controller (REINFORCE) or random (random search).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file with search settings (see the README).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="Override: key=value (repeatable).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the search in --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Architecture search with weight sharing (ENAS macro space) on Fashion-MNIST: the RNN
    controller samples children of a shared supernet, rewarded by validation accuracy; the best
    derived architecture is retrained from scratch and scored on the test split."""
    from metakit.search.arch import load_search_config, search_architecture

    _run_search(
        load_search_config, search_architecture, out, budget, seed, policy, config, set_, resume,
        progress,
    )  # fmt: skip


def _expression_command(target: str, doc: str) -> None:
    """Register `metakit search TARGET` (optimizer or activation): same options, own target."""

    def command(
        out: Annotated[Path, typer.Option("--out", "-o", help="Search run directory.")],
        budget: Annotated[
            float | None, typer.Option(help="Minutes of search (default 30; 0: no limit).")
        ] = None,
        seed: Annotated[int | None, typer.Option(help="Seed of the whole search.")] = None,
        policy: Annotated[
            str | None, typer.Option(help="controller (REINFORCE) or random (random search).")
        ] = None,
        config: Annotated[Path | None, typer.Option(help="YAML file with search settings.")] = None,
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", "-s", help="Override: key=value (repeatable)."),
        ] = None,
        resume: Annotated[bool, typer.Option(help="Continue the search in --out.")] = False,
        progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    ) -> None:
        from functools import partial

        from metakit.search.expression_search import load_expression_config, search_expressions

        _run_search(
            partial(load_expression_config, target), search_expressions, out, budget, seed,
            policy, config, set_, resume, progress,
        )  # fmt: skip

    command.__doc__ = doc
    search_app.command(target)(command)


_expression_command(
    "optimizer",
    """Neural optimizer search (Bello et al. 2017): the controller writes update rules
    b(u1(op1), u2(op2)) over g, m, v, sign(g), sign(m), ...; each is rewarded by training a small
    MLP on a Fashion-MNIST subset at a grid of rates. Prints the top rules as formulas.""",
)
_expression_command(
    "activation",
    """Activation search (Ramachandran et al. 2017): the controller writes activations
    b(u1(x), u2(x)) with a learnable beta; each is rewarded by training a small MLP on a
    Fashion-MNIST subset. Prints the top activations as formulas.""",
)


def _run_search(
    load: Callable[..., Any],
    search: Callable[..., dict[str, Any]],
    out: Path,
    budget: float | None,
    seed: int | None,
    policy: str | None,
    config: Path | None,
    set_: list[str] | None,
    resume: bool,
    progress: bool,
) -> None:
    """Settings from the YAML (the run's own on --resume) and the options, then the search."""
    overrides = _search_overrides(budget, seed, policy, config, set_, resume)
    source = out / "config.yaml" if resume and (out / "config.yaml").exists() else config
    settings = load(source, overrides)
    try:
        result = search(settings, out, resume=resume, progress=progress)
    except KeyboardInterrupt as e:
        fail(str(e) or "interrupted", code=130)
    typer.echo(json.dumps(result))


def _search_overrides(
    budget: float | None,
    seed: int | None,
    policy: str | None,
    config: Path | None,
    set_: list[str] | None,
    resume: bool,
) -> list[str]:
    """`--set` overrides plus the named options; on --resume only the budget may change."""
    overrides = list(set_ or [])
    for key, value in (("budget", budget), ("seed", seed), ("policy", policy)):
        if value is not None:
            overrides.append(f"{key}={value}")
    changed = sorted({o.split("=", 1)[0].strip() for o in overrides} - {"budget"})
    if resume and (changed or config is not None):
        fail(
            "--resume continues the search as it was configured; only --budget may change, "
            f"not {changed or ['--config']}"
        )
    return overrides


@app.command()
def recipes() -> None:
    """List the shipped recipes."""
    from metakit.config import list_recipes, read_yaml, recipe_dir

    for name in list_recipes():
        doc = read_yaml(recipe_dir() / f"{name}.yaml").get("description", "")
        typer.echo(f"{name:32s} {doc}")


def dataset_functions(name: str):  # type: ignore[no-untyped-def]
    """`info` and `fetch` of a registered dataset's module (one module may serve several
    datasets, e.g. mnist and fashion-mnist; it lists them in DATASET_NAMES)."""
    import functools
    import importlib

    from metakit.data import DATASETS

    DATASETS.get(name)  # unknown names get the list of available ones
    module_name = {"fashion-mnist": "mnist"}.get(name, name.replace("-", "_"))
    module = importlib.import_module(f"metakit.data.{module_name}")
    if name in getattr(module, "DATASET_NAMES", ()):
        return functools.partial(module.info, name=name), functools.partial(module.fetch, name=name)
    return module.info, module.fetch


@data_app.command("info")
def data_info(name: Annotated[str, typer.Argument(help="Dataset name, e.g. omniglot.")]) -> None:
    """Check a local dataset's structure, decode it once, and report what it holds."""
    from metakit.data.store import cache_dir, data_root

    info_fn, _ = dataset_functions(name)
    info = info_fn(download=False)
    info.update(data_root=str(data_root()), cache=str(cache_dir()))
    typer.echo(json.dumps(info, indent=2))


@data_app.command("fetch")
def data_fetch(name: Annotated[str, typer.Argument(help="Dataset name, e.g. omniglot.")]) -> None:
    """Download what is missing (checksum-verified) into the data root and decode it once."""
    info_fn, fetch_fn = dataset_functions(name)
    fetch_fn()
    typer.echo(json.dumps(info_fn(download=False), indent=2))


def main() -> None:
    """Entry point: metakit errors become one clear line on stderr and exit code 2."""
    try:
        app()
    except MetakitError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
