"""A plain multilayer perceptron backbone (sinusoid regression, tiny-model gradient checks)."""

from __future__ import annotations

from torch import nn

from metakit.errors import ConfigError
from metakit.models.backbone import Backbone


def mlp(
    in_features: int = 0,
    in_channels: int = 1,
    image_size: int = 28,
    hidden: list[int] | None = None,
    num_classes: int = 0,
) -> Backbone:
    """`hidden` Linear+ReLU blocks (default 40, 40 as in the MAML sinusoid experiments).

    `in_features` defaults to a flattened `in_channels x image_size x image_size` image.
    """
    widths = [40, 40] if hidden is None else list(hidden)
    if not widths or min(widths) < 1:
        raise ConfigError(f"mlp hidden widths must be positive, got {widths}")
    features = in_features or in_channels * image_size * image_size
    blocks: list[nn.Module] = []
    for i, width in enumerate(widths):
        layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
        layers += [nn.Linear(features if i == 0 else widths[i - 1], width), nn.ReLU()]
        blocks.append(nn.Sequential(*layers))
    return Backbone(blocks, out_dim=widths[-1], num_classes=num_classes)
