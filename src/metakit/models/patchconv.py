"""`PatchConv2d`: a 2-D convolution computed as one matrix product over image patches.

For an input with few channels (Omniglot's first Conv-4 layer: 1 channel, 3x3 kernel, so 9
numbers per patch) oneDNN's convolution is far from the machine's peak on CPU, mostly in the
weight gradient, which MAML needs for every task: measured on the 2-core CPU, forward + weight
gradient for 75 28x28 images took 24 ms with `F.conv2d` and 5.4 ms as a patch matrix product.
The product is laid out so that the weight gradient is the fast `patches^T @ grad` (a
transposed weight view would make autograd pick the slow `grad^T @ patches`), and the output
comes out channels-last (NHWC memory) like the rest of Conv-4 on CPU. Under `vmap` with
per-task weights it is a batched matrix product instead of a grouped convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: use the patch product when a patch has at most this many numbers (in_channels * kh * kw)
MAX_PATCH = 32


class PatchConv2d(nn.Conv2d):
    """`nn.Conv2d` (same parameters and state-dict keys) that runs as a patch matrix product
    on CPU when the patch is small, the stride and dilation are 1 and there is one group;
    otherwise, and on other devices, it is the ordinary convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._patch_path(x):
            return super().forward(x)
        kh, kw = self.kernel_size
        ph, pw = self.padding  # type: ignore[misc]
        n, c, h, w = x.shape
        out_h, out_w = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
        nhwc = F.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))  # [N, H+2p, W+2p, C]
        patches = torch.stack(
            [nhwc[:, i : i + out_h, j : j + out_w] for i in range(kh) for j in range(kw)], dim=-1
        ).reshape(n * out_h * out_w, c * kh * kw)  # rows: pixels; columns ordered (c, i, j)
        weight = self.weight.reshape(self.out_channels, -1).t().contiguous()  # [C*kh*kw, out]
        out = patches @ weight if self.bias is None else torch.addmm(self.bias, patches, weight)
        return out.view(n, out_h, out_w, self.out_channels).permute(0, 3, 1, 2)

    def _patch_path(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dim() == 4
            and self.in_channels * self.kernel_size[0] * self.kernel_size[1] <= MAX_PATCH
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
        )
