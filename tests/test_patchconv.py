"""PatchConv2d is `nn.Conv2d` computed as a patch matrix product: same values, same gradients
(first and second order, as MAML needs), under vmap too."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from metakit.models.patchconv import PatchConv2d


def reference(module: PatchConv2d, x: torch.Tensor, weight=None, bias=None) -> torch.Tensor:
    weight = module.weight if weight is None else weight
    bias = module.bias if bias is None else bias
    return F.conv2d(x, weight, bias, padding=module.padding)


@pytest.mark.parametrize(
    ("channels", "kernel", "padding", "bias"),
    [
        (1, 3, 1, True),
        (3, 3, 1, True),
        (1, 3, 0, False),
        (1, 5, 2, True),
        (1, (3, 1), (1, 0), True),
    ],
)
def test_values_and_gradients_equal_conv2d(channels, kernel, padding, bias):
    torch.manual_seed(0)
    conv = PatchConv2d(channels, 6, kernel, padding=padding, bias=bias).double()
    x = torch.randn(4, channels, 9, 7, dtype=torch.double, requires_grad=True)
    assert conv._patch_path(x)
    out, ref = conv(x), reference(conv, x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)
    upstream = torch.randn_like(ref)
    inputs = [x, *conv.parameters()]
    for got, want in zip(
        torch.autograd.grad(out, inputs, upstream),
        torch.autograd.grad(ref, inputs, upstream),
        strict=True,
    ):
        torch.testing.assert_close(got, want)


def test_output_is_channels_last():
    conv = PatchConv2d(1, 8, 3, padding=1)
    out = conv(torch.randn(2, 1, 6, 6))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_second_order_gradient_equals_conv2d():
    """The MAML meta-gradient differentiates through an inner gradient of the weights."""
    torch.manual_seed(1)
    conv = PatchConv2d(1, 4, 3, padding=1).double()
    x = torch.randn(3, 1, 6, 6, dtype=torch.double)
    target = torch.randn(3, 4, 6, 6, dtype=torch.double)

    def meta_gradient(forward):  # type: ignore[no-untyped-def]
        inner = torch.autograd.grad(
            ((forward() - target) ** 2).mean(), conv.weight, create_graph=True
        )[0]
        return torch.autograd.grad((inner**3).sum(), [conv.weight, conv.bias])

    for got, want in zip(
        meta_gradient(lambda: conv(x)), meta_gradient(lambda: reference(conv, x)), strict=True
    ):
        torch.testing.assert_close(got, want)


def test_vmap_over_per_task_weights_equals_loop():
    torch.manual_seed(2)
    conv = PatchConv2d(1, 5, 3, padding=1).double()
    weights = torch.randn(3, 5, 1, 3, 3, dtype=torch.double)
    x = torch.randn(3, 2, 1, 6, 6, dtype=torch.double)

    def loss(w: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        return functional_call(conv, {"weight": w, "bias": conv.bias}, (xs,)).pow(2).sum()

    batched = vmap(grad(loss))(weights, x)
    looped = torch.stack([grad(loss)(w, xs) for w, xs in zip(weights, x, strict=True)])
    torch.testing.assert_close(batched, looped)
    reference_grad = torch.stack(
        [
            torch.func.grad(lambda w, xs: reference(conv, xs, weight=w).pow(2).sum())(w, xs)
            for w, xs in zip(weights, x, strict=True)
        ]
    )
    torch.testing.assert_close(batched, reference_grad)


@pytest.mark.parametrize(
    ("channels", "options"), [(16, {"padding": 1}), (1, {"stride": 2}), (1, {"dilation": 2})]
)
def test_other_convolutions_fall_back_to_conv2d(channels, options):
    conv = PatchConv2d(channels, 4, 3, **options)
    x = torch.randn(2, channels, 9, 9)
    assert not conv._patch_path(x)
    torch.testing.assert_close(
        conv(x), F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation)
    )
