"""Image preprocessing shared by dataset decoding and `Learner` inputs, so both match exactly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from metakit.errors import DataError

ImageInput = torch.Tensor | Sequence[Image.Image] | Sequence[str | Path]


@dataclass(frozen=True)
class Preprocess:
    """How raw images become model inputs: resize to a square, grey or RGB, optional inversion.

    Images are stored decoded as uint8 `[N, C, H, W]`; the model sees `uint8 / 255` as float.
    """

    image_size: int
    channels: int = 1
    invert: bool = False  # Omniglot is black ink on white; inverting makes strokes bright

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(**d)

    def pil_to_uint8(self, image: Image.Image) -> torch.Tensor:
        """Decode one PIL image into a `[C, S, S]` uint8 tensor."""
        mode = "L" if self.channels == 1 else "RGB"
        img = image.convert(mode)
        if img.size != (self.image_size, self.image_size):
            img = img.resize((self.image_size, self.image_size), Image.Resampling.LANCZOS)
        arr = np.asarray(img, dtype=np.uint8)
        if self.invert:
            arr = 255 - arr
        t = torch.from_numpy(arr.copy())
        return t.unsqueeze(0) if self.channels == 1 else t.permute(2, 0, 1).contiguous()

    def load_uint8(self, x: ImageInput) -> torch.Tensor:
        """Turn a tensor, PIL images or image paths into a `[N, C, S, S]` uint8 batch."""
        if isinstance(x, torch.Tensor):
            return self._check_tensor(x)
        if isinstance(x, str | Path):
            raise DataError("expected a list of images or paths, got a single path; wrap it in []")
        out = []
        for item in x:
            if isinstance(item, Image.Image):
                out.append(self.pil_to_uint8(item))
            elif isinstance(item, str | Path):
                out.append(self.pil_to_uint8(open_image(Path(item))))
            else:
                raise DataError(
                    f"cannot use an input of type {type(item).__name__}; give a tensor, PIL images "
                    "or image file paths"
                )
        if not out:
            raise DataError("no images given")
        return torch.stack(out)

    def __call__(self, x: ImageInput) -> torch.Tensor:
        """Model-ready float batch `[N, C, S, S]` in [0, 1]."""
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return self._check_tensor(x)
        return to_float(self.load_uint8(x))

    def _check_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Accept `[N, C, S, S]` or `[N, S, S]` (one channel); raw uint8 or preprocessed float."""
        if x.dim() == 3 and self.channels == 1:
            x = x.unsqueeze(1)
        expected = (self.channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise DataError(
                f"expected images of shape [N, {', '.join(map(str, expected))}], got "
                f"{list(x.shape)}; pass PIL images or file paths to have them resized"
            )
        if x.dtype not in (torch.uint8,) and not x.is_floating_point():
            raise DataError(f"image tensors must be uint8 or float, got {x.dtype}")
        return x


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images → float in [0, 1]; the single conversion point used by samplers and learners."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file, with a clear error for missing or corrupt files."""
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None
