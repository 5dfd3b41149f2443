"""Algorithm registry: each entry takes a `backbone` plus its own options."""

from metakit.algorithms.base import Algorithm
from metakit.algorithms.maml import MAML, MetaSGD
from metakit.algorithms.pretrained import Pretrained
from metakit.algorithms.protonet import ProtoNet
from metakit.algorithms.reptile import Reptile
from metakit.registry import Registry

ALGORITHMS: Registry[Algorithm] = Registry("algorithm")
ALGORITHMS.register("protonet")(ProtoNet)
ALGORITHMS.register("maml")(MAML)
ALGORITHMS.register("metasgd")(MetaSGD)
ALGORITHMS.register("reptile")(Reptile)
ALGORITHMS.register("pretrained")(Pretrained)


def list_algorithms() -> list[str]:
    return ALGORITHMS.names()


__all__ = [
    "ALGORITHMS",
    "MAML",
    "Algorithm",
    "MetaSGD",
    "Pretrained",
    "ProtoNet",
    "Reptile",
    "list_algorithms",
]
