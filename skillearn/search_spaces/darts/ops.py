"""Candidate ops of the DARTS CNN cell (quark0/darts ``operations.py``, ported to modern torch).

Every op maps ``(N, C, H, W)`` to ``(N, C, H/stride, W/stride)`` so one edge's ops can be summed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class ReLUConvBN(nn.Module):
    """ReLU -> conv -> BN; DARTS uses it (1x1) to bring cell inputs to the cell's width."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


# Where dilated depthwise convs run as polyphase undilated ones (measured faster on CPU only;
# cuDNN has native dilated kernels). Tests empty it to exercise the GPU code path on CPU.
POLYPHASE_DEVICES: set[str] = {"cpu"}


def dilated_depthwise_as_dense(x: Tensor, weight: Tensor, stride: int) -> Tensor:
    """A "same" depthwise conv with dilation 2, computed as an undilated one on the input's
    2x2 polyphase components (bit-identical).

    oneDNN's dilated depthwise backward is 3-15x slower on CPU than an undilated one of the same
    work. With dilation 2 and even padding, output pixels of parity (a, b) read only input pixels
    of parity (a, b): stride 2 keeps only parity (0, 0), i.e. a plain conv of ``x[::2, ::2]``;
    stride 1 stacks the four parities as channels (pixel_unshuffle), convolves each with the
    same kernel, and interleaves them back.
    """
    k, c = weight.shape[-1], x.shape[1]
    if stride == 2:
        return F.conv2d(x[:, :, ::2, ::2], weight, padding=(k - 1) // 2, groups=c)
    h, wd = x.shape[-2:]
    if h % 2 or wd % 2:  # zero rows/columns stand in for the conv's own zero padding
        x = F.pad(x, (0, wd % 2, 0, h % 2))
    phases = F.pixel_unshuffle(x, 2)  # channel 4c + 2a + b holds x[c, a::2, b::2]
    out = F.conv2d(phases, weight.repeat_interleave(4, dim=0), padding=(k - 1) // 2,
                   groups=4 * c)
    return F.pixel_shuffle(out, 2)[:, :, :h, :wd]


def polyphase_applies(x: Tensor, kernel_size: int, padding: int, dilation: int) -> bool:
    """Whether a depthwise conv of `x` runs as :func:`dilated_depthwise_as_dense`: a "same"
    dilation-2 conv (odd kernel, padding = kernel - 1) on a device in ``POLYPHASE_DEVICES``."""
    return (dilation == 2 and kernel_size % 2 == 1 and padding == kernel_size - 1
            and x.device.type in POLYPHASE_DEVICES)


class DilatedDepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state dict) for a depthwise conv that runs as
    :func:`dilated_depthwise_as_dense` where :func:`polyphase_applies`."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == self.groups and polyphase_applies(
            x, self.kernel_size[0], self.padding[0], self.dilation[0]  # type: ignore[arg-type]
        ):
            return dilated_depthwise_as_dense(x, self.weight, self.stride[0])
        return super().forward(x)


class DilConv(nn.Module):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN (a cheap large receptive field)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            DilatedDepthwiseConv2d(
                c_in,
                c_in,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=c_in,
                bias=False,
            ),
            nn.Conv2d(c_in, c_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked depthwise-separable convs, as DARTS (only the first one strides)."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                c_in, c_in, kernel_size, stride=stride, padding=padding, groups=c_in, bias=False
            ),
            nn.Conv2d(c_in, c_in, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel_size, stride=1, padding=padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Zero(nn.Module):
    """The ``none`` op: a zero tensor of the output shape.

    The supernet never calls it (its contribution is zero anyway); it exists so a genotype that
    names ``none`` can still be built and so module indices line up with the op list.
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


def strided_pointwise(x: Tensor, weight: Tensor) -> Tensor:
    """A stride-2 1x1 conv, computed as the 1x1 conv of the even pixels (the same numbers).

    oneDNN 3.12 (torch 2.14) corrupts the heap in the backward of a stride-2 1x1 conv on NHWC
    inputs with fewer than 8 channels on CPUs without AVX-512 (reproduce with
    ``ONEDNN_MAX_CPU_ISA=AVX2``); the sliced form never reaches that kernel.
    """
    return F.conv2d(x[:, :, ::2, ::2], weight)


class FactorizedReduce(nn.Module):
    """Halve the spatial size with two offset stride-2 1x1 convs, concatenated on channels.

    Unlike DARTS this also accepts odd sizes (the offset branch is padded so both halves agree)
    and odd ``c_out``; for even sizes and widths it is exactly DARTS's op.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        shifted = x[:, :, 1:, 1:]
        pad_w, pad_h = x.shape[3] % 2, x.shape[2] % 2
        if pad_w or pad_h:
            shifted = nn.functional.pad(shifted, (0, pad_w, 0, pad_h))
        out = torch.cat([strided_pointwise(x, self.conv_1.weight),
                         strided_pointwise(shifted, self.conv_2.weight)], dim=1)
        return self.bn(out)


OpFactory = Callable[[int, int, bool], nn.Module]

# The conv ops: name -> (kernel, dilation, padding, two stacked separable convs?). One table for
# the edge-by-edge ops below and the fused cells (`fused.py`).
CONV_SPECS: dict[str, tuple[int, int, int, bool]] = {
    "sep_conv_3x3": (3, 1, 1, True),
    "sep_conv_5x5": (5, 1, 2, True),
    "dil_conv_3x3": (3, 2, 2, False),
    "dil_conv_5x5": (5, 2, 4, False),
}


def _conv_op(spec: tuple[int, int, int, bool], c: int, stride: int, affine: bool) -> nn.Module:
    kernel, dilation, padding, separable = spec
    if separable:
        return SepConv(c, c, kernel, stride, padding, affine=affine)
    return DilConv(c, c, kernel, stride, padding, dilation, affine=affine)


OPS: dict[str, OpFactory] = {
    "none": lambda c, stride, affine: Zero(stride),
    "avg_pool_3x3": lambda c, stride, affine: nn.AvgPool2d(
        3, stride=stride, padding=1, count_include_pad=False
    ),
    "max_pool_3x3": lambda c, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda c, stride, affine: (
        nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine=affine)
    ),
    **{name: partial(_conv_op, spec) for name, spec in CONV_SPECS.items()},
}
