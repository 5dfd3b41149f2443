"""`searched`: a backbone whose architecture came out of `metakit search arch`."""

from __future__ import annotations

from metakit.models.backbone import Backbone

PLAIN = "conv3x3/conv3x3/conv3x3/conv3x3/conv3x3/conv3x3"


def searched(
    arch: str = PLAIN,
    in_channels: int = 1,
    channels: int = 32,
    num_classes: int = 0,
    image_size: int = 28,
) -> Backbone:
    """`arch`: a search run directory, its `arch.json`, or the text form
    (`conv3x3/sep5x5/maxpool3x3<0`, see `metakit.search.supernet.Architecture`); the default is
    a plain chain of six conv3x3 layers. Features are the
    globally pooled `channels`; `image_size` is accepted for a uniform backbone interface."""
    from metakit.search.supernet import Architecture, ChildNet

    net = ChildNet(Architecture.load(arch), in_channels=in_channels, channels=channels)
    return Backbone([net], channels, num_classes=num_classes)
