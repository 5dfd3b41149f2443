"""Backbone registry: `create_backbone(name, **options)` and `list_backbones()`."""

from metakit.models.backbone import Backbone
from metakit.models.conv4 import conv4
from metakit.models.identity import identity
from metakit.models.minilm import minilm
from metakit.models.mlp import mlp
from metakit.models.searched import searched
from metakit.registry import Registry

BACKBONES: Registry[Backbone] = Registry("backbone")
BACKBONES.register("conv4")(conv4)
BACKBONES.register("mlp")(mlp)
BACKBONES.register("identity")(identity)
BACKBONES.register("minilm")(minilm)
BACKBONES.register("searched")(searched)


def create_backbone(name: str, **options: object) -> Backbone:
    """Build a registered backbone; unknown names or options raise a ConfigError."""
    return BACKBONES.build(name, **options)


def list_backbones() -> list[str]:
    return BACKBONES.names()


__all__ = ["BACKBONES", "Backbone", "create_backbone", "list_backbones"]
