"""`Learner`: the sklearn-like face of a trained algorithm (`metakit.load(DIR)` returns one)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import torch

from metakit.algorithms.base import Algorithm, TaskState
from metakit.data.preprocess import ImageInput, Preprocess
from metakit.errors import DataError, MetakitError


class Learner:
    """`fit(x, y)` adapts to a support set; `predict`/`predict_proba` classify new inputs.

    Inputs go through the same preprocessing the model was trained with, whether they are a
    tensor, PIL images or file paths. Labels may be any hashable values (ints, strings).
    """

    def __init__(
        self,
        algorithm: Algorithm,
        preprocess: Preprocess | None,
        device: str | torch.device = "cpu",
    ):
        self.algorithm = algorithm.eval()
        self.preprocess = preprocess
        self.device = torch.device(device)
        self.classes_: list[Hashable] = []
        self._state: TaskState | None = None

    @property
    def regression(self) -> bool:
        return getattr(self.algorithm, "task", "classification") == "regression"

    def _inputs(self, x: ImageInput) -> torch.Tensor:
        if self.preprocess is None:  # non-image data (e.g. sinusoid points): numbers in
            t = torch.as_tensor(x, dtype=torch.float32)
            return (t.unsqueeze(-1) if t.dim() == 1 else t).to(self.device)
        return self.preprocess(x).to(self.device)

    def fit(self, x: ImageInput, y: Sequence[Hashable] | torch.Tensor) -> Learner:
        """Adapt to support examples `x` with labels `y` (at least one example per class), or
        to regression targets `y` for a regression run."""
        inputs = self._inputs(x)
        if self.regression:
            return self._fit_regression(inputs, y)
        labels = y.tolist() if isinstance(y, torch.Tensor) else list(y)
        if len(labels) != inputs.shape[0]:
            raise DataError(f"fit got {inputs.shape[0]} inputs but {len(labels)} labels")
        try:
            self.classes_ = sorted(set(labels))  # type: ignore[type-var]
        except TypeError:
            self.classes_ = list(dict.fromkeys(labels))
        if len(self.classes_) < 2:
            raise DataError("fit needs examples of at least two classes")
        index = {c: i for i, c in enumerate(self.classes_)}
        targets = torch.tensor([index[label] for label in labels], device=self.device)
        with self.algorithm.inference():
            self._state = self.algorithm.adapt(inputs, targets)
        return self

    def _fit_regression(self, inputs: torch.Tensor, y: object) -> Learner:
        targets = torch.as_tensor(y, dtype=torch.float32, device=self.device)
        targets = targets.unsqueeze(-1) if targets.dim() == 1 else targets
        if targets.shape[0] != inputs.shape[0]:
            raise DataError(f"fit got {inputs.shape[0]} inputs but {targets.shape[0]} targets")
        with self.algorithm.inference():
            self._state = self.algorithm.adapt(inputs, targets)
        return self

    def _outputs(self, x: ImageInput) -> torch.Tensor:
        if self._state is None:
            raise MetakitError("call fit(x, y) with a support set before predicting")
        with self.algorithm.inference():
            return self.algorithm.logits(self._state, self._inputs(x)).detach().cpu()

    def predict_proba(self, x: ImageInput) -> torch.Tensor:
        """Class probabilities `[N, len(classes_)]`, columns in the order of `classes_`."""
        if self.regression:
            raise MetakitError("a regression learner has no class probabilities; use predict")
        return self.algorithm.probabilities(self._outputs(x))

    def predict(self, x: ImageInput) -> torch.Tensor | list[Hashable]:
        """Predicted labels: a tensor when the fitted labels were ints, else a list; for a
        regression run, the predicted values `[N, 1]`."""
        if self.regression:
            return self._outputs(x)
        best = self.predict_proba(x).argmax(-1)
        labels = [self.classes_[i] for i in best.tolist()]
        if all(isinstance(c, int) for c in self.classes_):
            return torch.tensor(labels)
        return labels

    def embed(self, x: ImageInput) -> torch.Tensor:
        """Backbone features `[N, D]`, usable as a plain embedding."""
        with torch.inference_mode():
            return self.algorithm.embed(self._inputs(x)).cpu()


class LearnedOptimizer:
    """A trained update rule (a `kind: l2o` run): `as_optimizer(params)` is a
    `torch.optim.Optimizer` that steps any model's parameters with the trained network."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net.eval().requires_grad_(False)

    def rule(self) -> Any:
        return self.net.rule()  # type: ignore[operator]

    def as_optimizer(self, params: Any) -> torch.optim.Optimizer:
        from metakit.functional.optim import RuleOptimizer

        return RuleOptimizer(params, self.rule())


def load(
    run_dir: str | Path, checkpoint: str | None = None, device: str = "cpu"
) -> Learner | LearnedOptimizer:
    """The trained Learner of a run directory, from the checkpoint its recipe evaluates
    (`eval.checkpoint`: `best` on val by default, `last` for fixed-schedule recipes); for a
    learned-optimizer run, a `LearnedOptimizer`."""
    from metakit.config import recipe_kind
    from metakit.engine.build import load_run, read_run_config

    config_path = Path(run_dir) / "config.yaml"
    if config_path.exists() and recipe_kind(config_path) == "l2o":
        from metakit.l2o.train import load_trained

        return LearnedOptimizer(load_trained(Path(run_dir), checkpoint or "best")[0])
    which = checkpoint or read_run_config(Path(run_dir)).eval.checkpoint
    _, algorithm, preprocess, _ = load_run(Path(run_dir), which, device)
    return Learner(algorithm, preprocess, device)


__all__: list[Any] = ["LearnedOptimizer", "Learner", "load"]
