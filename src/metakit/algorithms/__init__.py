"""Algorithm registry: each entry takes a `backbone` plus its own options."""

from metakit.algorithms.base import Algorithm
from metakit.algorithms.baseline import Baseline
from metakit.algorithms.maml import MAML, MetaSGD
from metakit.algorithms.mann import MANN
from metakit.algorithms.matching import MatchingNet
from metakit.algorithms.meta_lstm import MetaLSTM
from metakit.algorithms.metanet import MetaNet
from metakit.algorithms.nearest_centroid import NearestCentroid
from metakit.algorithms.pretrained import Pretrained
from metakit.algorithms.protonet import ProtoNet
from metakit.algorithms.relation import RelationNet
from metakit.algorithms.reptile import Reptile
from metakit.algorithms.siamese import Siamese
from metakit.algorithms.zeroshot import ZeroShotProtoNet
from metakit.registry import Registry

ALGORITHMS: Registry[Algorithm] = Registry("algorithm")
ALGORITHMS.register("protonet")(ProtoNet)
ALGORITHMS.register("matching")(MatchingNet)
ALGORITHMS.register("relation")(RelationNet)
ALGORITHMS.register("siamese")(Siamese)
ALGORITHMS.register("maml")(MAML)
ALGORITHMS.register("metasgd")(MetaSGD)
ALGORITHMS.register("reptile")(Reptile)
ALGORITHMS.register("pretrained")(Pretrained)
ALGORITHMS.register("baseline")(Baseline)
ALGORITHMS.register("zeroshot")(ZeroShotProtoNet)
ALGORITHMS.register("mann")(MANN)
ALGORITHMS.register("metanet")(MetaNet)
ALGORITHMS.register("meta_lstm")(MetaLSTM)


def list_algorithms() -> list[str]:
    return ALGORITHMS.names()


__all__ = [
    "ALGORITHMS",
    "MAML",
    "MANN",
    "Algorithm",
    "Baseline",
    "MatchingNet",
    "MetaLSTM",
    "MetaNet",
    "MetaSGD",
    "NearestCentroid",
    "Pretrained",
    "ProtoNet",
    "RelationNet",
    "Reptile",
    "Siamese",
    "ZeroShotProtoNet",
    "list_algorithms",
]
