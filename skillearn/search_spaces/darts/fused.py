"""All mixed edges that leave one cell state, evaluated as one batch of ops.

In a DARTS cell the state ``j`` feeds one mixed edge per later node, and every edge applies the
same op set to the same input with its own weights. Evaluated edge by edge (DARTS' ``MixedOp``)
that is ~40 small kernels per edge, and at digits sizes the step is all Python and launch
overhead. Here the edges of one state share their work:

- ``ReLU(x)``, the pools (and their non-affine BN) and ``skip_connect`` are the same for every
  edge, so they run once per state instead of once per edge;
- the per-edge convolutions become grouped convolutions over ``edges x channels`` (one kernel per
  op kind and position instead of one per edge), and each BN one call over all of them;
- the alpha-weighted sum over ops is one multiply-and-reduce for all edges.

The result equals DARTS' edge-by-edge sum up to float rounding (checked in the tests and in
``benchmarks/fast_paths.py``). Parameters are stored fused, edge-major inside each op kind;
:func:`edgewise_keys` maps them to DARTS' own state-dict names so checkpoints convert both ways.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import CONV_SPECS, dilated_depthwise_as_dense, polyphase_applies, strided_pointwise

POOL_OPS = ("max_pool_3x3", "avg_pool_3x3")


def _conv_weight(out_channels: int, in_per_group: int, kernel: int) -> nn.Parameter:
    """A conv weight with ``nn.Conv2d``'s default init (fan-in per output channel is unchanged
    by fusing, so every edge's slice is distributed exactly as DARTS' separate conv)."""
    weight = torch.empty(out_channels, in_per_group, kernel, kernel)
    nn.init.kaiming_uniform_(weight, a=5**0.5)
    return nn.Parameter(weight)


class EdgeBundle(nn.Module):
    """The mixed edges leaving one state: ``forward(x, w)`` returns every edge's
    ``sum_k w[e, k] * op_k(x)`` stacked as ``(N, edges, C, H', W')``.

    ``w`` holds the softmaxed alphas of these edges (``(edges, len(ops))``, edge order = target
    node order). ``none`` is never run: its term is exactly zero.
    """

    def __init__(self, channels: int, stride: int, ops: tuple[str, ...], edges: int) -> None:
        super().__init__()
        self.channels, self.stride, self.edges, self.ops = channels, stride, edges, tuple(ops)
        active = [name for name in ops if name != "none"]
        self.pools = [name for name in active if name in POOL_OPS]
        self.seps = [name for name in active if name in CONV_SPECS and CONV_SPECS[name][3]]
        self.dils = [name for name in active if name in CONV_SPECS and not CONV_SPECS[name][3]]
        self.convs = self.seps + self.dils
        skip = "skip_connect" in active
        self.reduce_skip = skip and stride == 2  # FactorizedReduce: its own weights per edge
        self.edge_ops = (["skip_connect"] if self.reduce_skip else []) + self.convs
        self.shared_ops = self.pools + (["skip_connect"] if skip and stride == 1 else [])
        self.register_buffer(
            "edge_cols", torch.tensor([ops.index(n) for n in self.edge_ops]), persistent=False
        )
        self.register_buffer(
            "shared_cols", torch.tensor([ops.index(n) for n in self.shared_ops]), persistent=False
        )
        c, width = channels, edges * channels
        self.relu = nn.ReLU()  # a module, so activation swaps (benchmarks' Softplus) reach it
        if self.pools:
            self.pool_bn = nn.BatchNorm2d(len(self.pools) * c, affine=False)
        if self.reduce_skip:
            self.fr_conv_1 = _conv_weight(edges * (c // 2), c, 1)
            self.fr_conv_2 = _conv_weight(edges * (c - c // 2), c, 1)
            self.fr_bn = nn.BatchNorm2d(width, affine=False)
        if self.convs:
            self.dw1 = nn.ParameterDict({n: _conv_weight(width, 1, CONV_SPECS[n][0])
                                         for n in self.convs})
            self.pw1 = _conv_weight(len(self.convs) * width, c, 1)
            self.bn1 = nn.BatchNorm2d(len(self.convs) * width, affine=False)
        if self.seps:
            self.dw2 = nn.ParameterDict({n: _conv_weight(width, 1, CONV_SPECS[n][0])
                                         for n in self.seps})
            self.pw2 = _conv_weight(len(self.seps) * width, c, 1)
            self.bn2 = nn.BatchNorm2d(len(self.seps) * width, affine=False)

    # ----------------------------------------------------------------------------------------
    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        c, e = self.channels, self.edges
        per_edge: list[Tensor] = []  # each (N, edges * C, H', W'), in `edge_ops` order
        relu = self.relu(x) if (self.convs or self.reduce_skip) else x
        if self.reduce_skip:
            per_edge.append(self._factorized_reduce(relu))
        if self.convs:
            per_edge.extend(self._convs(relu))
        nhwc = _is_nhwc(x)
        out = None
        if per_edge:
            stacked = per_edge[0] if len(per_edge) == 1 else torch.cat(per_edge, dim=1)
            out = _weighted_sum(stacked, w.index_select(1, self.edge_cols), e, c, nhwc)
        if self.shared_ops:
            shared = _weighted_sum(self._shared(x), w.index_select(1, self.shared_cols), 1, c,
                                   nhwc)
            out = shared if out is None else out + shared
        assert out is not None  # SpaceConfig.validate guarantees one op other than `none`
        if nhwc:  # (N, H, W, edges, C) -> (N, edges, C, H, W), a view: each edge stays NHWC
            return out.permute(0, 3, 4, 1, 2)
        return out

    def _shared(self, x: Tensor) -> Tensor:
        """Pools (+ their BN) and the identity skip: the same tensor for every edge."""
        parts: list[Tensor] = []
        if self.pools:
            pooled = [
                F.max_pool2d(x, 3, self.stride, 1) if name == "max_pool_3x3"
                else F.avg_pool2d(x, 3, self.stride, 1, count_include_pad=False)
                for name in self.pools
            ]
            parts.append(self.pool_bn(pooled[0] if len(pooled) == 1 else torch.cat(pooled, 1)))
        if "skip_connect" in self.shared_ops:
            parts.append(x)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _factorized_reduce(self, relu: Tensor) -> Tensor:
        """DARTS' FactorizedReduce for every edge at once (see ``ops.FactorizedReduce``)."""
        n, c, e = relu.shape[0], self.channels, self.edges
        shifted = relu[:, :, 1:, 1:]
        pad_w, pad_h = relu.shape[3] % 2, relu.shape[2] % 2
        if pad_w or pad_h:
            shifted = F.pad(shifted, (0, pad_w, 0, pad_h))
        first = strided_pointwise(relu, self.fr_conv_1)
        second = strided_pointwise(shifted, self.fr_conv_2)
        h, wd = first.shape[-2:]
        if _is_nhwc(first):  # interleave the halves edge by edge without leaving NHWC
            out = torch.cat([first.permute(0, 2, 3, 1).reshape(n, h, wd, e, c // 2),
                             second.permute(0, 2, 3, 1).reshape(n, h, wd, e, c - c // 2)], dim=4)
            return self.fr_bn(out.reshape(n, h, wd, e * c).permute(0, 3, 1, 2))
        out = torch.cat(
            [first.view(n, e, c // 2, h, wd), second.view(n, e, c - c // 2, h, wd)], dim=2
        )
        return self.fr_bn(out.reshape(n, e * c, h, wd))

    def _convs(self, relu: Tensor) -> list[Tensor]:
        """sep/dil convs of every edge: (edge-stacked) depthwise, grouped pointwise, BN."""
        width = self.edges * self.channels
        # cat, not repeat: it keeps the input's memory format (NHWC makes depthwise fast)
        tiled = torch.cat([relu] * self.edges, dim=1) if self.edges > 1 else relu
        depthwise = [self._depthwise(tiled, self.dw1[n], n, self.stride) for n in self.convs]
        first = self.bn1(F.conv2d(_cat(depthwise), self.pw1, groups=len(self.convs) * self.edges))
        # split, not slicing: a slice's backward zero-fills a full-size gradient per slice
        parts = first.split(width, dim=1)
        outs: list[Tensor] = []
        if self.seps:
            depthwise = [  # ReLU per part: its output is dense again (NHWC stays fast)
                self._depthwise(self.relu(part), self.dw2[n], n, 1)
                for part, n in zip(parts, self.seps, strict=False)
            ]
            outs.append(self.bn2(F.conv2d(_cat(depthwise), self.pw2,
                                          groups=len(self.seps) * self.edges)))
        outs.extend(parts[len(self.seps):])
        return outs

    @staticmethod
    def _depthwise(x: Tensor, weight: Tensor, name: str, stride: int) -> Tensor:
        kernel, dilation, padding, _ = CONV_SPECS[name]
        if polyphase_applies(x, kernel, padding, dilation):
            out = dilated_depthwise_as_dense(x, weight, stride)
        else:
            out = F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation,
                           groups=x.shape[1])
        # its output is concatenated, so its gradient would arrive as a strided slice, and a
        # depthwise backward on a strided gradient is several times slower on CPU
        return _DenseGrad.apply(out)

    # ----------------------------------------------------------------------------------------
    def edgewise_keys(self, edge: int) -> Iterator[tuple[str, str, slice | None]]:
        """``(DARTS key under the edge's MixedOp, fused key, rows)`` for local edge ``edge``.

        DARTS' names: ``_ops.{k}.1.*`` (pool BN), ``_ops.{k}.conv_1|conv_2|bn`` (stride-2
        skip), ``_ops.{k}.op.{1,2,3}`` (dil conv) and ``op.{1,2,3,5,6,7}`` (sep conv).
        ``rows=None`` means the whole tensor (``num_batches_tracked``).
        """
        c, width, ops = self.channels, self.edges * self.channels, self.ops

        def bn(darts: str, fused: str, rows: slice) -> Iterator[tuple[str, str, slice | None]]:
            yield f"{darts}.running_mean", f"{fused}.running_mean", rows
            yield f"{darts}.running_var", f"{fused}.running_var", rows
            yield f"{darts}.num_batches_tracked", f"{fused}.num_batches_tracked", None

        for p, name in enumerate(self.pools):
            yield from bn(f"_ops.{ops.index(name)}.1", "pool_bn", slice(p * c, (p + 1) * c))
        if self.reduce_skip:
            k = ops.index("skip_connect")
            c1, c2 = c // 2, c - c // 2
            yield f"_ops.{k}.conv_1.weight", "fr_conv_1", slice(edge * c1, (edge + 1) * c1)
            yield f"_ops.{k}.conv_2.weight", "fr_conv_2", slice(edge * c2, (edge + 1) * c2)
            yield from bn(f"_ops.{k}.bn", "fr_bn", slice(edge * c, (edge + 1) * c))
        own = slice(edge * c, (edge + 1) * c)
        for t, name in enumerate(self.convs):
            k, rows = ops.index(name), slice(t * width + edge * c, t * width + (edge + 1) * c)
            yield f"_ops.{k}.op.1.weight", f"dw1.{name}", own
            yield f"_ops.{k}.op.2.weight", "pw1", rows
            yield from bn(f"_ops.{k}.op.3", "bn1", rows)
        for s, name in enumerate(self.seps):
            k, rows = ops.index(name), slice(s * width + edge * c, s * width + (edge + 1) * c)
            yield f"_ops.{k}.op.5.weight", f"dw2.{name}", own
            yield f"_ops.{k}.op.6.weight", "pw2", rows
            yield from bn(f"_ops.{k}.op.7", "bn2", rows)


class _DenseGrad(torch.autograd.Function):
    """Identity whose backward hands on a dense gradient in the forward tensor's layout."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.nhwc = _is_nhwc(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        layout = torch.channels_last if ctx.nhwc else torch.contiguous_format
        return grad.contiguous(memory_format=layout)


def _is_nhwc(t: Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(
        memory_format=torch.channels_last)


def _weighted_sum(stacked: Tensor, weights: Tensor, edges: int, c: int, nhwc: bool) -> Tensor:
    """``sum_t weights[e, t] * stacked[:, t, e]`` for ``stacked`` of shape (N, T*edges*C, H, W)
    (``edges=1``: one tensor shared by all edges). NCHW in, ``(N, E, C, H, W)`` out; NHWC in,
    ``(N, H, W, E, C)`` out, both without a layout copy."""
    n, _, h, wd = stacked.shape
    kinds = weights.shape[1]
    if nhwc:
        view = stacked.permute(0, 2, 3, 1).reshape(n, h, wd, kinds, edges, c)
        return (view * weights.T.reshape(1, 1, 1, kinds, -1, 1)).sum(dim=3)
    view = stacked.view(n, kinds, edges, c, h, wd)
    return (view * weights.T.reshape(1, kinds, -1, 1, 1, 1)).sum(dim=1)


def _cat(tensors: list[Tensor]) -> Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1)
