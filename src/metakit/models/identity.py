"""The identity backbone: examples that already are features (e.g. cached sentence embeddings)
pass through unchanged, so metric methods and heads work on them directly."""

from __future__ import annotations

from torch import nn

from metakit.models.backbone import Backbone


def identity(
    in_features: int = 0, in_channels: int = 1, image_size: int = 28, num_classes: int = 0
) -> Backbone:
    """Flattens its input; `in_features` defaults to `in_channels x image_size x image_size`."""
    features = in_features or in_channels * image_size * image_size
    return Backbone([nn.Flatten()], out_dim=features, num_classes=num_classes)
