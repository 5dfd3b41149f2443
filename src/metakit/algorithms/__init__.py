"""Algorithm registry: each entry takes a `backbone` plus its own options."""

from metakit.algorithms.base import Algorithm
from metakit.algorithms.maml import MAML, MetaSGD
from metakit.algorithms.protonet import ProtoNet
from metakit.registry import Registry

ALGORITHMS: Registry[Algorithm] = Registry("algorithm")
ALGORITHMS.register("protonet")(ProtoNet)
ALGORITHMS.register("maml")(MAML)
ALGORITHMS.register("metasgd")(MetaSGD)


def list_algorithms() -> list[str]:
    return ALGORITHMS.names()


__all__ = ["ALGORITHMS", "MAML", "Algorithm", "MetaSGD", "ProtoNet", "list_algorithms"]
