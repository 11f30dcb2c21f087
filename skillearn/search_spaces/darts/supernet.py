"""The DARTS one-shot supernet: every edge of every cell is a softmax-weighted mix of all ops.

Written so it can be driven functionally (``torch.func.functional_call``) by a multilevel
optimiser: the alphas are plain registered parameters read in ``forward``, nothing is cached and
no parameter is modified in place.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

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


class SearchCell(nn.Module):
    """A DARTS search cell: 2 inputs, ``nodes`` intermediate nodes fed by all earlier states."""

    def __init__(
        self,
        nodes: int,
        c_prev_prev: int,
        c_prev: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
        ops: tuple[str, ...],
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.nodes = nodes
        if reduction_prev:  # s0 is twice the resolution of s1: bring it down
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, c, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, c, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0, affine=False)
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
    / reduction cells respectively.
    """

    def __init__(self, config: SpaceConfig | None = None) -> None:
        super().__init__()
        self.config = config = (config or SpaceConfig()).validate()
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
            cell = SearchCell(
                config.nodes, c_prev_prev, c_prev, c_curr, reduction, reduction_prev, config.ops
            )
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, config.nodes * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, config.num_classes)
        shape = (config.num_edges, len(config.ops))
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(shape))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(shape))

    channels_last = False

    def use_channels_last(self) -> SuperNet:
        """Run in NHWC: depthwise convolutions (most of a DARTS cell) are several times faster
        that way on CPU at 32x32 and on GPU; 8x8 inputs gain nothing, so it is opt-in."""
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
