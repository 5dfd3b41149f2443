"""metakit: meta-learning and transfer learning on PyTorch.

The public face is small: `load(run_dir)` gives a trained `Learner`; the registries list what
can be built. Importing metakit has no side effects and does not touch any data.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("metakit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+local"

from metakit.algorithms import list_algorithms
from metakit.data import DATASETS, Episode, TaskSampler
from metakit.learner import Learner, load
from metakit.models import create_backbone, list_backbones


def list_datasets() -> list[str]:
    return DATASETS.names()


__all__ = [
    "Episode",
    "Learner",
    "TaskSampler",
    "__version__",
    "create_backbone",
    "list_algorithms",
    "list_backbones",
    "list_datasets",
    "load",
]
