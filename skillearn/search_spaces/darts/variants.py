"""Search-cell variants of the DARTS backbones: PC-DARTS, P-DARTS and DARTS−.

One supernet class, :class:`VariantSuperNet`, switched by a :class:`Variant`:

- ``partial_channels = K > 1`` (PC-DARTS, Xu et al. 2020): on every edge only the first ``C/K``
  channels go through the mixed op; the other channels bypass it (max-pooled 2x2 on stride-2
  edges) and the two parts are concatenated and channel-shuffled with ``K`` groups, so the next
  edge samples other channels.
- ``edge_norm`` (PC-DARTS): a learnable ``beta`` per edge; each node sums its incoming edges
  weighted by ``softmax(beta)`` over those edges, and genotypes rank edges by
  ``softmax(beta) * softmax(alpha)``. ``beta_normal`` / ``beta_reduce`` are architecture
  parameters: they live beside the alphas in :meth:`arch_parameters`.
- ``normal_ops`` / ``reduce_ops`` (P-DARTS, Chen et al. 2019): each edge has its own candidate
  set (pruned between stages); the alphas have one column per kept op. ``skip_dropout`` (an
  attribute, ramped per epoch) drops the identity skip's output; ``max_normal_skips`` caps the
  skips of the derived normal cell.
- ``aux_skip`` (DARTS−, Chu et al. 2021, an attribute ramped per epoch): an auxiliary skip on
  every edge with coefficient ``aux_skip``. It is the candidate ``skip_connect`` op's own output
  added once more (identity on stride-1 edges; on stride-2 edges it shares the candidate's
  FactorizedReduce weights), i.e. ``aux_skip`` is added to the skip column of the softmaxed
  alphas; no extra parameters.

Per-edge op sets only exist edge by edge (a fused :class:`EdgeBundle` runs one op set for all
edges of a state); the other variants run in both layouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .genotype import Genotype, derive_from_strengths
from .ops import OPS
from .space import SpaceConfig
from .supernet import CellShape, FusedSearchCell, SuperNet, _Cell


def channel_shuffle(x: Tensor, groups: int, dim: int = 1) -> Tensor:
    """PC-DARTS' shuffle: view the channels of `dim` as (groups, C/groups), swap, flatten."""
    if groups == 1:
        return x
    shape = list(x.shape)
    c = shape[dim]
    grouped = x.reshape(*shape[:dim], groups, c // groups, *shape[dim + 1:])
    return grouped.transpose(dim, dim + 1).reshape(shape)


def edge_softmax(beta: Tensor, nodes: int) -> Tensor:
    """``softmax(beta)`` over each node's incoming edges (node i owns the next 2 + i rows)."""
    parts, start = [], 0
    for i in range(nodes):
        parts.append(torch.softmax(beta[start:start + 2 + i], dim=0))
        start += 2 + i
    return torch.cat(parts)


def bypass(x: Tensor, stride: int) -> Tensor:
    """The channels PC-DARTS passes around the mixed op, at the op's output resolution."""
    return F.max_pool2d(x, 2, 2, ceil_mode=True) if stride == 2 else x


@dataclass(frozen=True)
class Variant:
    """What distinguishes a backbone's supernet from DARTS' (defaults: plain DARTS)."""

    partial_channels: int = 1
    edge_norm: bool = False
    normal_ops: tuple[tuple[str, ...], ...] | None = None
    reduce_ops: tuple[tuple[str, ...], ...] | None = None
    max_normal_skips: int = 0

    def __post_init__(self) -> None:
        for name in ("normal_ops", "reduce_ops"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(tuple(ops) for ops in value))

    @property
    def per_edge_ops(self) -> bool:
        return self.normal_ops is not None

    def check(self, config: SpaceConfig, fused: bool) -> None:
        """ValueError naming the first setting this space cannot take."""
        k = self.partial_channels
        if not isinstance(k, int) or k < 1 or config.channels % k:
            raise ValueError(f"partial_channels={k} must be an integer >= 1 dividing the "
                             f"supernet's {config.channels} channels")
        if (self.normal_ops is None) != (self.reduce_ops is None):
            raise ValueError("give both normal_ops and reduce_ops, or neither")
        if self.per_edge_ops:
            if fused:
                raise ValueError("per-edge op sets (P-DARTS) need the edge-by-edge cells "
                                 "(fused=False)")
            for name in ("normal_ops", "reduce_ops"):
                sets = getattr(self, name)
                if len(sets) != config.num_edges or len({len(s) for s in sets}) != 1:
                    raise ValueError(f"{name} needs {config.num_edges} op sets of one size")
                for ops in sets:
                    if any(op not in OPS for op in ops) or all(op == "none" for op in ops):
                        raise ValueError(f"{name}: bad op set {list(ops)}")


class PartialMixedEdge(nn.Module):
    """One edge, edge by edge: its own op set on ``C/K`` channels, the rest bypassing."""

    def __init__(self, c: int, stride: int, ops: Sequence[str], k: int) -> None:
        super().__init__()
        self.k, self.stride, self.mixed_channels = k, stride, c // k
        self._ops = nn.ModuleList()
        for name in ops:
            op = OPS[name](self.mixed_channels, stride, False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(self.mixed_channels, affine=False))
            self._ops.append(op)
        self._active = tuple(i for i, name in enumerate(ops) if name != "none")
        self._identity = frozenset(i for i, name in enumerate(ops)
                                   if name == "skip_connect" and stride == 1)

    def forward(self, x: Tensor, w: Tensor, skip_dropout: float = 0.0) -> Tensor:
        x1 = x if self.k == 1 else x[:, : self.mixed_channels]
        out: Tensor | None = None
        for i in self._active:
            h = self._ops[i](x1)
            if i in self._identity and skip_dropout > 0.0:
                h = F.dropout(h, skip_dropout, training=self.training)
            out = w[i] * h if out is None else out + w[i] * h
        assert out is not None
        if self.k == 1:
            return out
        rest = bypass(x[:, self.mixed_channels:], self.stride)
        return channel_shuffle(torch.cat([out, rest], dim=1), self.k)


class VariantCell(_Cell):
    """Edge-by-edge search cell with per-edge op sets, partial channels and edge weights."""

    def __init__(self, shape: CellShape, edge_ops: Sequence[Sequence[str]], k: int) -> None:
        super().__init__(shape)
        self.edges = nn.ModuleList()
        e = 0
        for i in range(shape.nodes):
            for j in range(2 + i):
                stride = 2 if shape.reduction and j < 2 else 1
                self.edges.append(PartialMixedEdge(shape.c, stride, edge_ops[e], k))
                e += 1

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, scale: Tensor | None,
                skip_dropout: float) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.nodes):
            s: Tensor | None = None
            for j, h in enumerate(states):
                out = self.edges[offset + j](h, weights[offset + j], skip_dropout)
                if scale is not None:
                    out = scale[offset + j] * out
                s = out if s is None else s + out
            offset += len(states)
            assert s is not None
            states.append(s)
        return torch.cat(states[2:], dim=1)


class PartialFusedCell(FusedSearchCell):
    """The fused cell on ``C/K`` channels per edge, with the bypass, shuffle and edge weights.

    Edge weights multiply the mixed part through its op weights (the bundle's sum is linear in
    them) and the bypass directly, so each edge's output is ``scale_e * edge_e(x)`` as in
    PC-DARTS.
    """

    def __init__(self, shape: CellShape, ops: tuple[str, ...], k: int) -> None:
        super().__init__(shape, ops, mixed_channels=shape.c // k)
        self.k, self.mixed_channels = k, shape.c // k

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor,  # type: ignore[override]
                scale: Tensor | None = None, skip_dropout: float = 0.0) -> Tensor:
        by_source = weights.index_select(0, self.edge_order).split(self.sizes)
        scales = (scale.index_select(0, self.edge_order).split(self.sizes) if scale is not None
                  else [None] * len(self.sizes))
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        partial: list[Tensor | None] = [None] * self.nodes
        for source, bundle in enumerate(self.bundles):
            if source >= 2:
                states.append(partial[source - 2])
            edges = self._edges(bundle, states[source], by_source[source], scales[source])
            for node, out in enumerate(edges.unbind(1), start=max(0, source - 1)):
                prev = partial[node]
                partial[node] = out if prev is None else prev + out
        states.append(partial[-1])
        return torch.cat(states[2:], dim=1)

    def _edges(self, bundle: nn.Module, x: Tensor, w: Tensor, scale: Tensor | None) -> Tensor:
        """Every outgoing edge of one state, ``(N, edges, C, H', W')``."""
        if scale is not None:
            w = w * scale[:, None]
        if self.k == 1:
            return bundle(x, w)
        mixed = bundle(x[:, : self.mixed_channels], w)
        rest = bypass(x[:, self.mixed_channels:], bundle.stride).unsqueeze(1)
        if scale is not None:
            rest = rest * scale.view(1, -1, 1, 1, 1)
        else:
            rest = rest.expand(-1, bundle.edges, -1, -1, -1)
        return channel_shuffle(torch.cat([mixed, rest], dim=2), self.k, dim=2)

    def edgewise_keys(self) -> list[tuple[str, str, slice | None]]:
        """Keys of the edge-by-edge twin (:class:`VariantCell`, ``edges.{e}._ops...``)."""
        return [("edges." + darts.removeprefix("_ops."), fused, rows)
                for darts, fused, rows in super().edgewise_keys()]


class VariantSuperNet(SuperNet):
    """:class:`SuperNet` with a backbone's :class:`Variant` (see the module docstring).

    ``aux_skip`` (DARTS−) and ``skip_dropout`` (P-DARTS) are plain attributes a search loop
    sets every epoch; they are functions of the epoch, not state, so a resumed run recomputes
    them.
    """

    def __init__(self, config: SpaceConfig | None = None, fused: bool = True,
                 variant: Variant | None = None) -> None:
        variant = variant or Variant()
        config = (config or SpaceConfig()).validate()
        variant.check(config, fused)
        object.__setattr__(self, "variant", variant)  # read by the cell hooks in __init__
        super().__init__(config, fused=fused)
        self.aux_skip = 0.0
        self.skip_dropout = 0.0
        if variant.edge_norm:
            self.beta_normal = nn.Parameter(1e-3 * torch.randn(config.num_edges))
            self.beta_reduce = nn.Parameter(1e-3 * torch.randn(config.num_edges))
        uniform = [config.ops] * config.num_edges
        self.normal_ops = variant.normal_ops or tuple(uniform)
        self.reduce_ops = variant.reduce_ops or tuple(uniform)
        skip = torch.tensor([[float(op == "skip_connect") for op in ops]
                             for ops in self.normal_ops])
        skip_reduce = torch.tensor([[float(op == "skip_connect") for op in ops]
                                    for ops in self.reduce_ops])
        self.register_buffer("skip_normal", skip, persistent=False)
        self.register_buffer("skip_reduce", skip_reduce, persistent=False)

    def _make_cell(self, shape: CellShape, index: int) -> nn.Module:
        v: Variant = self.variant
        if v.per_edge_ops:
            assert v.normal_ops is not None and v.reduce_ops is not None
            ops = v.reduce_ops if shape.reduction else v.normal_ops
            return VariantCell(shape, ops, v.partial_channels)
        if self.fused:
            return PartialFusedCell(shape, self.config.ops, v.partial_channels)
        return VariantCell(shape, [self.config.ops] * self.config.num_edges, v.partial_channels)

    def _ops_per_edge(self) -> int:
        v: Variant = self.variant
        return len(v.normal_ops[0]) if v.normal_ops else len(self.config.ops)

    def cell_weights(self, reduction: bool) -> tuple[Tensor, Tensor | None]:
        """(op weights, edge weights or None) the cells of one kind use in the forward."""
        alpha = self.alpha_reduce if reduction else self.alpha_normal
        w = torch.softmax(alpha, dim=-1)
        if self.aux_skip:
            w = w + self.aux_skip * (self.skip_reduce if reduction else self.skip_normal)
        scale = None
        if self.variant.edge_norm:
            beta = self.beta_reduce if reduction else self.beta_normal
            scale = edge_softmax(beta, self.config.nodes)
        return w, scale

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        normal, reduce = self.cell_weights(False), self.cell_weights(True)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            w, scale = reduce if cell.reduction else normal
            s0, s1 = s1, cell(s0, s1, w, scale, self.skip_dropout)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def arch_parameters(self) -> dict[str, nn.Parameter]:
        params = super().arch_parameters()
        if self.variant.edge_norm:
            params.update(beta_normal=self.beta_normal, beta_reduce=self.beta_reduce)
        return params

    def weight_parameters(self) -> dict[str, nn.Parameter]:
        arch = set(self.arch_parameters())
        return {n: p for n, p in self.named_parameters() if n not in arch}

    def strengths(self) -> tuple[Tensor, Tensor]:
        """Per-cell (edges, ops) strengths the genotype is read from: ``softmax(alpha)``,
        times ``softmax(beta)`` per edge with edge normalisation."""
        with torch.no_grad():
            out = []
            for reduction in (False, True):
                alpha = self.alpha_reduce if reduction else self.alpha_normal
                w = torch.softmax(alpha.detach().float(), dim=-1)
                if self.variant.edge_norm:
                    beta = self.beta_reduce if reduction else self.beta_normal
                    w = w * edge_softmax(beta.detach().float(), self.config.nodes)[:, None]
                out.append(w.cpu())
        return out[0], out[1]

    def genotype(self) -> Genotype:
        normal, reduce = self.strengths()
        return derive_from_strengths(normal, reduce, self.normal_ops, self.reduce_ops,
                                     self.config.nodes, self.variant.max_normal_skips)


@dataclass(frozen=True)
class BackboneSpace(SpaceConfig):
    """A :class:`SpaceConfig` that also carries its backbone's :class:`Variant`."""

    variant: Variant = Variant()


def make_supernet(space: SpaceConfig, fused: bool = True) -> SuperNet:
    """DARTS' supernet for a plain space; the variant's for a :class:`BackboneSpace` (edge by
    edge whenever the variant has per-edge op sets)."""
    variant = getattr(space, "variant", None)
    if variant is None:
        return SuperNet(space, fused=fused)
    return VariantSuperNet(space, fused=fused and not variant.per_edge_ops, variant=variant)
