"""The DARTS one-shot supernet: every edge of every cell is a softmax-weighted mix of all ops.

Written so it can be driven functionally (``torch.func.functional_call``) by a multilevel
optimiser: the alphas are plain registered parameters read in ``forward``, nothing is cached and
no parameter is modified in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .fused import EdgeBundle
from .genotype import Genotype, derive_genotype
from .ops import OPS, FactorizedReduce, ReLUConvBN
from .space import SpaceConfig

ARCH_PARAM_NAMES: tuple[str, str] = ("alpha_normal", "alpha_reduce")


class MixedOp(nn.Module):
    """One edge: ``sum_k w_k * op_k(x)`` over the op set, never running ``none``.

    ``none`` is a zero tensor, so its term is exactly zero; skipping it saves its work (and the
    zeros it would allocate) without changing the result or the gradient w.r.t. alpha.
    """

    def __init__(self, c: int, stride: int, ops: tuple[str, ...]) -> None:
        super().__init__()
        self._ops = nn.ModuleList()
        for name in ops:
            op = OPS[name](c, stride, False)
            if "pool" in name:  # DARTS: pools get a non-affine BN in the search net
                op = nn.Sequential(op, nn.BatchNorm2d(c, affine=False))
            self._ops.append(op)
        self._active = tuple(k for k, name in enumerate(ops) if name != "none")

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        out = weights[self._active[0]] * self._ops[self._active[0]](x)
        for k in self._active[1:]:
            out = out + weights[k] * self._ops[k](x)
        return out


def edge_index(node: int, source: int) -> int:
    """Row of the alpha matrix for the edge ``source -> node`` (DARTS' order: node by node,
    each node's inputs in state order; node ``i`` has ``2 + i`` inputs)."""
    return node * (node + 3) // 2 + source


@dataclass(frozen=True)
class CellShape:
    """Where a cell sits: its node count, input/own widths and whether it or its predecessor
    reduces the resolution."""

    nodes: int
    c_prev_prev: int
    c_prev: int
    c: int
    reduction: bool
    reduction_prev: bool


class _Cell(nn.Module):
    """What both cell layouts share: the two input preprocessing ops."""

    def __init__(self, shape: CellShape) -> None:
        super().__init__()
        self.reduction = shape.reduction
        self.nodes = shape.nodes
        if shape.reduction_prev:  # s0 is twice the resolution of s1: bring it down
            self.preprocess0: nn.Module = FactorizedReduce(shape.c_prev_prev, shape.c,
                                                           affine=False)
        else:
            self.preprocess0 = ReLUConvBN(shape.c_prev_prev, shape.c, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(shape.c_prev, shape.c, 1, 1, 0, affine=False)


class FusedSearchCell(_Cell):
    """A DARTS search cell evaluated source by source: every state, once computed, runs all of
    its outgoing edges as one :class:`EdgeBundle` and adds them into the nodes they feed.

    Nodes still receive their inputs in DARTS' order (state 0 first), so each node is the same
    sum as in :class:`SearchCell`.
    """

    def __init__(self, shape: CellShape, ops: tuple[str, ...],
                 mixed_channels: int | None = None) -> None:
        super().__init__(shape)
        nodes, reduction = shape.nodes, shape.reduction
        c = mixed_channels or shape.c  # PC-DARTS runs the ops on a slice of the channels
        self.bundles = nn.ModuleList()
        order: list[int] = []
        for source in range(nodes + 1):  # the last node feeds no edge
            targets = range(max(0, source - 1), nodes)
            stride = 2 if reduction and source < 2 else 1
            self.bundles.append(EdgeBundle(c, stride, ops, len(targets)))
            order.extend(edge_index(node, source) for node in targets)
        self.register_buffer("edge_order", torch.tensor(order), persistent=False)
        self.sizes = [bundle.edges for bundle in self.bundles]

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        by_source = weights.index_select(0, self.edge_order).split(self.sizes)
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        partial: list[Tensor | None] = [None] * self.nodes
        for source, bundle in enumerate(self.bundles):
            if source >= 2:  # node source-2 has now received all of its inputs
                states.append(partial[source - 2])
            edges = bundle(states[source], by_source[source]).unbind(1)  # backward: one stack
            for node, out in enumerate(edges, start=max(0, source - 1)):
                prev = partial[node]
                partial[node] = out if prev is None else prev + out
        states.append(partial[-1])
        return torch.cat(states[2:], dim=1)

    def edgewise_keys(self) -> list[tuple[str, str, slice | None]]:
        """``(DARTS key, fused key, rows)`` for every fused tensor of this cell's edges."""
        keys = []
        for source, bundle in enumerate(self.bundles):
            for k in range(bundle.edges):
                edge = edge_index(max(0, source - 1) + k, source)
                keys.extend(
                    (f"_ops.{edge}.{darts}", f"bundles.{source}.{fused}", rows)
                    for darts, fused, rows in bundle.edgewise_keys(k)
                )
        return keys


class SearchCell(_Cell):
    """A DARTS search cell: 2 inputs, ``nodes`` intermediate nodes fed by all earlier states.

    Edge by edge, as DARTS writes it: the reference layout (``SuperNet(fused=False)``).
    """

    def __init__(self, shape: CellShape, ops: tuple[str, ...]) -> None:
        super().__init__(shape)
        nodes, c, reduction = shape.nodes, shape.c, shape.reduction
        self._ops = nn.ModuleList()
        for i in range(nodes):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append(MixedOp(c, stride, ops))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.nodes):
            s = self._ops[offset](states[0], weights[offset])
            for j in range(1, len(states)):
                s = s + self._ops[offset + j](states[j], weights[offset + j])
            offset += len(states)
            states.append(s)
        return torch.cat(states[2:], dim=1)


class SuperNet(nn.Module):
    """DARTS ``model_search.Network`` built from a :class:`SpaceConfig`.

    ``alpha_normal`` / ``alpha_reduce`` (shape ``(num_edges, len(ops))``) are shared by all normal
    / reduction cells respectively. ``fused=True`` (the default) evaluates each cell source by
    source (:class:`FusedSearchCell`); ``fused=False`` builds DARTS' edge-by-edge cells, the
    reference the fused ones are checked against. Both compute the same function;
    :meth:`edgewise_state_dict` and :meth:`load_state_dict` convert between their layouts.
    """

    def __init__(self, config: SpaceConfig | None = None, fused: bool = True) -> None:
        super().__init__()
        self.config = config = (config or SpaceConfig()).validate()
        self.fused = fused
        c_curr = config.stem_multiplier * config.channels
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, c_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_curr),
        )
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, config.channels
        reductions = set(config.reduction_cells())
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(config.cells):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            shape = CellShape(config.nodes, c_prev_prev, c_prev, c_curr, reduction,
                              reduction_prev)
            self.cells.append(self._make_cell(shape, len(self.cells)))
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, config.nodes * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, config.num_classes)
        shape = (config.num_edges, self._ops_per_edge())
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(shape))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(shape))

    def _make_cell(self, shape: CellShape, index: int) -> nn.Module:
        """Cell `index` of the network (a hook: the backbones in `variants` build their own)."""
        cell_type = FusedSearchCell if self.fused else SearchCell
        return cell_type(shape, self.config.ops)

    def _ops_per_edge(self) -> int:
        """Columns of an alpha matrix: candidate ops on each edge."""
        return len(self.config.ops)

    channels_last = False

    def use_channels_last(self) -> SuperNet:
        """Run in NHWC: oneDNN's depthwise convolutions (most of a DARTS cell) are several
        times faster that way on CPU; with the fused cells that holds at 8x8 too."""
        self.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # Softmax is recomputed every call from the (possibly substituted) alphas.
        w_normal = torch.softmax(self.alpha_normal, dim=-1)
        w_reduce = torch.softmax(self.alpha_reduce, dim=-1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, w_reduce if cell.reduction else w_normal)
        out = self.global_pooling(s1)
        return self.classifier(out.flatten(1))

    def edgewise_keys(self) -> list[tuple[str, str, slice | None]]:
        """``(DARTS key, fused key, rows)`` for every fused edge tensor (empty when unfused)."""
        if not self.fused:
            return []
        return [
            (f"cells.{i}.{darts}", f"cells.{i}.{fused}", rows)
            for i, cell in enumerate(self.cells)
            for darts, fused, rows in cell.edgewise_keys()
        ]

    def to_edgewise(self, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Re-key a name -> tensor map of this net (a state dict, or gradients) into DARTS'
        edge-by-edge layout (``model_search.Network``'s names)."""
        mapping = self.edgewise_keys()
        fused_names = {fused for _, fused, _ in mapping}
        out = {k: v for k, v in tensors.items() if k not in fused_names}
        for darts, fused, rows in mapping:
            if fused in tensors:
                out[darts] = tensors[fused] if rows is None else tensors[fused][rows]
        return out

    def edgewise_state_dict(self) -> dict[str, Tensor]:
        """The state dict in DARTS' edge-by-edge names (loadable by the original code)."""
        return self.to_edgewise(self.state_dict())

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ):
        """Also accepts DARTS' edge-by-edge layout (``edgewise_state_dict`` or a checkpoint of
        ``SuperNet(fused=False)``) and converts it."""
        mapping = self.edgewise_keys()
        if mapping and any(darts in state_dict for darts, _, _ in mapping):
            own = {k: v.detach().clone() for k, v in self.state_dict().items()}
            darts_names = {darts for darts, _, _ in mapping}
            converted = {k: v for k, v in state_dict.items() if k not in darts_names}
            missing = [darts for darts, _, _ in mapping if darts not in state_dict]
            if missing and strict:
                raise RuntimeError(f"edgewise state dict lacks {len(missing)} keys, e.g. "
                                   f"{missing[:3]}")
            for darts, fused, rows in mapping:
                if darts not in state_dict:
                    continue
                value = torch.as_tensor(state_dict[darts])
                if rows is None:
                    own[fused] = value.clone()
                else:
                    own[fused][rows] = value
                converted[fused] = own[fused]
            state_dict = converted
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def arch_parameters(self) -> dict[str, nn.Parameter]:
        """The architecture parameters, by name (the upper-level variables)."""
        return {"alpha_normal": self.alpha_normal, "alpha_reduce": self.alpha_reduce}

    def weight_parameters(self) -> dict[str, nn.Parameter]:
        """Every other parameter, by name (the lower-level variables)."""
        return {n: p for n, p in self.named_parameters() if n not in ARCH_PARAM_NAMES}

    def genotype(self) -> Genotype:
        """The discrete cell the current alphas select (DARTS rule, see ``derive_genotype``)."""
        return derive_genotype(
            self.alpha_normal, self.alpha_reduce, self.config.ops, self.config.nodes
        )
