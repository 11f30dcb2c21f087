"""The discrete network of a genotype as a standalone Python module: plain torch, no skillearn.

`standalone_source` writes the source of a module that defines the network (the ops, the cell
wiring and the sizes baked in) with the parameter names of `DiscreteNetwork`, so its state dict
loads as is (the auxiliary head, a training aid, is left out). The genotype usually comes from
an MLflow artifact, i.e. from outside: nothing from it is pasted into the code. Op names are
checked against the ops this module knows and written as this module's own string constants;
indices and sizes are checked integers written with `int.__repr__`. The generated text is
parsed before it is returned, and the module it defines is tested against `DiscreteNetwork`.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from string import Template

from .genotype import MAX_GENOTYPE_NODES, Genotype, parse_genotype

# Every op the template below can build, in the order of ops.PRIMITIVES.
EXPORTABLE_OPS: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

# (lowest, highest) accepted value of each size baked into the module
SIZE_LIMITS: dict[str, tuple[int, int]] = {
    "channels": (1, 4096),
    "cells": (1, 200),
    "num_classes": (1, 1_000_000),
    "in_channels": (1, 1024),
    "stem_multiplier": (1, 64),
}


def _op_literal(name: object) -> str:
    """The module's own constant for a known op name (never the given string itself)."""
    for known in EXPORTABLE_OPS:
        if name == known:
            return repr(known)
    shown = name[:40] if isinstance(name, str) else type(name).__name__
    raise ValueError(f"op {shown!r} cannot be exported; known ops: {', '.join(EXPORTABLE_OPS)}")


def _int_literal(value: object, low: int, high: int, what: str) -> str:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer in {low} .. {high}, got {str(value)[:40]}")
    return repr(int(value))


def _edges_literal(edges: Sequence[tuple[str, int]]) -> str:
    items = [f"({_op_literal(op)}, {_int_literal(j, 0, 1 + MAX_GENOTYPE_NODES, 'an input')})"
             for op, j in edges]
    return "(" + ", ".join(items) + ",)"


def _concat_literal(concat: Sequence[int]) -> str:
    items = [_int_literal(i, 2, 1 + MAX_GENOTYPE_NODES, "a concat index") for i in concat]
    return "(" + ", ".join(items) + ",)"


def standalone_source(
    genotype: Genotype,
    *,
    channels: int,
    cells: int,
    num_classes: int,
    in_channels: int,
    stem_multiplier: int = 3,
    weights_file: str = "network.pt",
) -> str:
    """Source of a module defining `Network` (the genotype's network at this size) and
    `load_network()` (built, `weights_file` beside the module loaded, eval mode).

    Raises ValueError naming the first problem: an unknown op, an input or concat index that
    does not exist, a size out of range."""
    parse_genotype(genotype.to_json())  # the structure (two edges per node, inputs that exist)
    sizes = {"channels": channels, "cells": cells, "num_classes": num_classes,
             "in_channels": in_channels, "stem_multiplier": stem_multiplier}
    literals = {name: _int_literal(value, *SIZE_LIMITS[name], name)
                for name, value in sizes.items()}
    if weights_file not in ("network.pt",):  # a file name we chose, not one from outside
        raise ValueError(f"unexpected weights file name {weights_file[:40]!r}")
    source = _TEMPLATE.substitute(
        normal=_edges_literal(genotype.normal),
        normal_concat=_concat_literal(genotype.normal_concat),
        reduce=_edges_literal(genotype.reduce),
        reduce_concat=_concat_literal(genotype.reduce_concat),
        weights_file=repr("network.pt"),
        **literals,
    )
    ast.parse(source)  # a generator bug shows here, not when the user imports the file
    return source


_TEMPLATE = Template('''\
"""A DARTS network exported by `skillearn export`: plain PyTorch, skillearn is not needed.

    import network
    net = network.load_network()  # the weights in network.pt beside this file, eval mode
    logits = net(x)               # x: (N, IN_CHANNELS, H, W), normalised as in training

The cells' ops and wiring are the constants below; the parameter names are those of skillearn's
DiscreteNetwork (without its auxiliary head), so its state dict loads as is. Drop-path, a
training aid, is left out.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (op, input state) per edge, two edges per intermediate node; states 0 and 1 are the cell's
# inputs, 2 + i is intermediate node i; *_CONCAT are the states concatenated as the output.
NORMAL = $normal
NORMAL_CONCAT = $normal_concat
REDUCE = $reduce
REDUCE_CONCAT = $reduce_concat
CHANNELS = $channels
CELLS = $cells
NUM_CLASSES = $num_classes
IN_CHANNELS = $in_channels
STEM_MULTIPLIER = $stem_multiplier
WEIGHTS_FILE = $weights_file


class ReLUConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, c: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c, c, kernel, stride=stride, padding=padding, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c, kernel, stride=1, padding=padding, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, c: int, kernel: int, stride: int, padding: int, dilation: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c, c, kernel, stride=stride, padding=padding, dilation=dilation,
                      groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class FactorizedReduce(nn.Module):
    """Halve the spatial size with two offset stride-2 1x1 convs (odd sizes padded)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        shifted = x[:, :, 1:, 1:]
        pad_w, pad_h = x.shape[3] % 2, x.shape[2] % 2
        if pad_w or pad_h:
            shifted = F.pad(shifted, (0, pad_w, 0, pad_h))
        out = torch.cat([F.conv2d(x[:, :, ::2, ::2], self.conv_1.weight),
                         F.conv2d(shifted[:, :, ::2, ::2], self.conv_2.weight)], dim=1)
        return self.bn(out)


class Zero(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


def make_op(name: str, c: int, stride: int) -> nn.Module:
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name == "sep_conv_3x3":
        return SepConv(c, 3, stride, 1)
    if name == "sep_conv_5x5":
        return SepConv(c, 5, stride, 2)
    if name == "dil_conv_3x3":
        return DilConv(c, 3, stride, 2, 2)
    if name == "dil_conv_5x5":
        return DilConv(c, 5, stride, 4, 2)
    raise ValueError(f"unknown op {name!r}")


class Cell(nn.Module):
    def __init__(self, c_prev_prev: int, c_prev: int, c: int, reduction: bool,
                 reduction_prev: bool) -> None:
        super().__init__()
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, c)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0)
        edges = REDUCE if reduction else NORMAL
        self.concat = REDUCE_CONCAT if reduction else NORMAL_CONCAT
        self.inputs = tuple(j for _, j in edges)
        self._ops = nn.ModuleList(
            make_op(name, c, 2 if reduction and j < 2 else 1) for name, j in edges)

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.inputs) // 2):
            a, b = 2 * node, 2 * node + 1
            states.append(self._ops[a](states[self.inputs[a]])
                          + self._ops[b](states[self.inputs[b]]))
        return torch.cat([states[i] for i in self.concat], dim=1)


def reduction_indices(cells: int) -> tuple[int, ...]:
    """Reduction cells at 1/3 and 2/3 of the depth, never the first."""
    return tuple(sorted({i for i in (cells // 3, 2 * cells // 3) if 0 < i < cells}))


class Network(nn.Module):
    """Stem -> CELLS cells -> global average pool -> linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        c_curr = STEM_MULTIPLIER * CHANNELS
        self.stem = nn.Sequential(nn.Conv2d(IN_CHANNELS, c_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_curr))
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, CHANNELS
        reductions = set(reduction_indices(CELLS))
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(CELLS):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            cell = Cell(c_prev_prev, c_prev, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, len(cell.concat) * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.global_pooling(s1).flatten(1))


def load_network(weights: str | Path | None = None, map_location: str = "cpu") -> Network:
    """The network with its trained weights (default: WEIGHTS_FILE beside this file), in eval
    mode. The weights are read with `weights_only=True`: tensors only, no pickled code."""
    net = Network()
    path = Path(weights) if weights is not None else Path(__file__).with_name(WEIGHTS_FILE)
    net.load_state_dict(torch.load(path, map_location=map_location, weights_only=True))
    return net.eval()
''')
