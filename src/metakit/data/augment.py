"""Image augmentation written in torch (no torchvision): Koch et al.'s affine distortions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    images: torch.Tensor,
    rotation: float = 10.0,
    shear: float = 0.3,
    scale: tuple[float, float] = (0.8, 1.2),
    translate: float = 2.0,
    p: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Koch et al. 2015 distortions of a batch `[N, C, H, W]`: rotation in ±`rotation` degrees,
    shear in ±`shear`, scale in `scale`, translation in ±`translate` pixels; each component is
    applied independently with probability `p` (otherwise it is the identity).
    """
    n, _, h, w = images.shape
    dev, dt = images.device, images.dtype

    def draw(low: float, high: float, identity: float) -> torch.Tensor:
        value = low + (high - low) * torch.rand(n, generator=generator)
        keep = torch.rand(n, generator=generator) < p
        return torch.where(keep, value, torch.full_like(value, identity))

    theta = draw(-rotation, rotation, 0.0) * math.pi / 180
    shear_x, shear_y = draw(-shear, shear, 0.0), draw(-shear, shear, 0.0)
    scale_x, scale_y = draw(*scale, 1.0), draw(*scale, 1.0)
    # translation in normalised coordinates ([-1, 1] spans the image)
    tx = draw(-translate, translate, 0.0) * 2 / w
    ty = draw(-translate, translate, 0.0) * 2 / h
    cos, sin = torch.cos(theta), torch.sin(theta)
    rotate = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shear_m = torch.stack(
        [torch.stack([torch.ones(n), shear_x], -1), torch.stack([shear_y, torch.ones(n)], -1)], -2
    )
    scale_m = torch.diag_embed(torch.stack([scale_x, scale_y], -1))
    linear = rotate @ shear_m @ scale_m
    matrix = torch.cat([linear, torch.stack([tx, ty], -1).unsqueeze(-1)], -1).to(dev, dt)
    grid = F.affine_grid(matrix, list(images.shape), align_corners=False)
    # background is the value of the image border (Omniglot: white paper), not zero
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)
