"""The discrete evaluation network: DARTS' ``NetworkCIFAR``, auxiliary head included."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .genotype import Genotype
from .ops import OPS, FactorizedReduce, ReLUConvBN
from .space import reduction_indices


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """Zero whole samples of a branch with prob ``drop_prob`` (rescaled), as DARTS regularises."""
    keep_prob = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep_prob)
    return x * mask / keep_prob


class DiscreteCell(nn.Module):
    """A cell whose every node sums exactly two chosen ops of earlier states."""

    def __init__(
        self,
        genotype: Genotype,
        c_prev_prev: int,
        c_prev: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, c)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, c, 1, 1, 0, affine=True)
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0, affine=True)
        edges = genotype.reduce if reduction else genotype.normal
        self._concat = genotype.reduce_concat if reduction else genotype.normal_concat
        if len(edges) % 2:
            raise ValueError(f"a genotype needs two edges per node, got {len(edges)} edges")
        self._steps = len(edges) // 2
        self.multiplier = len(self._concat)
        self._indices = tuple(j for _, j in edges)
        for i, j in enumerate(self._indices):
            if not 0 <= j < 2 + i // 2:
                raise ValueError(f"edge {i} of the genotype reads state {j}, which does not exist")
        self._ops = nn.ModuleList(
            OPS[name](c, 2 if reduction and j < 2 else 1, True) for name, j in edges
        )

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self._steps):
            s = None
            for e in (2 * i, 2 * i + 1):
                op = self._ops[e]
                h = op(states[self._indices[e]])
                if self.training and drop_prob > 0.0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                s = h if s is None else s + h
            states.append(s)
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS' ``AuxiliaryHeadCIFAR``: a small classifier on the cells' output at 2/3 depth.

    DARTS assumes the 8x8 maps of 32 px inputs there (5x5/3 average pool -> 2x2 -> 2x2 conv).
    Maps smaller than 5 px skip that pool and any size is then pooled to 2x2, so the head also
    fits other input sizes; at 32 px it is DARTS' head exactly.
    """

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        if min(x.shape[-2:]) >= 5:
            x = F.avg_pool2d(x, 5, stride=3, padding=0, count_include_pad=False)
        x = F.adaptive_avg_pool2d(x, 2)
        return self.classifier(self.features(x).flatten(1))


class DiscreteNetwork(nn.Module):
    """Stem -> ``cells`` discrete cells (reductions as the supernet) -> pool -> linear.

    ``drop_path_prob`` is a plain attribute so a training loop can ramp it per epoch.
    ``auxiliary=True`` adds DARTS' auxiliary head after cell ``2 * cells // 3`` (the second
    reduction); its logits come from `forward_with_auxiliary`, in training mode only.
    """

    def __init__(
        self,
        genotype: Genotype,
        channels: int = 16,
        cells: int = 8,
        num_classes: int = 10,
        in_channels: int = 3,
        drop_path_prob: float = 0.0,
        stem_multiplier: int = 3,
        auxiliary: bool = False,
    ) -> None:
        super().__init__()
        self.drop_path_prob = drop_path_prob
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr)
        )
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, channels
        reductions = set(reduction_indices(cells))
        self.cells = nn.ModuleList()
        reduction_prev = False
        self.auxiliary_index = 2 * cells // 3
        self.auxiliary_head: AuxiliaryHead | None = None
        for i in range(cells):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            cell = DiscreteCell(genotype, c_prev_prev, c_prev, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * c_curr
            if auxiliary and i == self.auxiliary_index:
                self.auxiliary_head = AuxiliaryHead(c_prev, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x, auxiliary=False)[0]

    def forward_with_auxiliary(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(logits, auxiliary logits); the latter is None in eval mode or without the head."""
        return self._run(x, auxiliary=self.training and self.auxiliary_head is not None)

    def _run(self, x: Tensor, auxiliary: bool) -> tuple[Tensor, Tensor | None]:
        aux_logits = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if auxiliary and i == self.auxiliary_index and self.auxiliary_head is not None:
                aux_logits = self.auxiliary_head(s1)
        return self.classifier(self.global_pooling(s1).flatten(1)), aux_logits
