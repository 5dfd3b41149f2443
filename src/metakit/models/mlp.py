"""A plain multilayer perceptron backbone (sinusoid regression, tiny-model gradient checks)."""

from __future__ import annotations

from torch import nn

from metakit.errors import ConfigError
from metakit.models.activations import make_activation
from metakit.models.backbone import Backbone


def mlp(
    in_features: int = 0,
    in_channels: int = 1,
    image_size: int = 28,
    hidden: list[int] | None = None,
    num_classes: int = 0,
    activation: str = "relu",
) -> Backbone:
    """`hidden` Linear+activation blocks (default 40, 40 ReLU as in the MAML sinusoid experiments).

    `in_features` defaults to a flattened `in_channels x image_size x image_size` image.
    """
    widths = [40, 40] if hidden is None else list(hidden)
    if not widths or min(widths) < 1:
        raise ConfigError(f"mlp hidden widths must be positive, got {widths}")
    features = in_features or in_channels * image_size * image_size
    blocks: list[nn.Module] = []
    for i, width in enumerate(widths):
        layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
        layers += [
            nn.Linear(features if i == 0 else widths[i - 1], width),
            make_activation(activation),
        ]
        blocks.append(nn.Sequential(*layers))
    return Backbone(blocks, out_dim=widths[-1], num_classes=num_classes)
