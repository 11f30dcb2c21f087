"""quark0/darts ``cnn/model_search.py`` in modern torch.

Changes from the original, none of which alters the computation:
- the op subset, node count, input channels and device are arguments (the original hardcodes
  PRIMITIVES, RGB input and ``.cuda()``); ``new()`` passes them on, where the original's
  ``new()`` silently fell back to ``steps=4``;
- ``multiplier`` defaults to ``steps`` (every intermediate node is concatenated, as skillearn's
  SuperNet does; the original default 4 equals its default steps).
The alphas stay plain tensors with ``requires_grad`` (the original ``Variable``s), so
``parameters()`` yields the network weights only, exactly as ``architect.py`` expects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .operations import OPS, PRIMITIVES, FactorizedReduce, ReLUConvBN


class MixedOp(nn.Module):
    def __init__(self, C: int, stride: int, primitives: tuple[str, ...]) -> None:
        super().__init__()
        self._ops = nn.ModuleList()
        for primitive in primitives:
            op = OPS[primitive](C, stride, False)
            if "pool" in primitive:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        return sum(w * op(x) for w, op in zip(weights, self._ops, strict=True))


class Cell(nn.Module):
    def __init__(
        self, steps: int, multiplier: int, C_prev_prev: int, C_prev: int, C: int,
        reduction: bool, reduction_prev: bool, primitives: tuple[str, ...],
    ) -> None:
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier
        self._ops = nn.ModuleList()
        self._bns = nn.ModuleList()
        for i in range(self._steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append(MixedOp(C, stride, primitives))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        s0 = self.preprocess0(s0)
        s1 = self.preprocess1(s1)
        states = [s0, s1]
        offset = 0
        for _ in range(self._steps):
            s = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._multiplier:], dim=1)


class Network(nn.Module):
    def __init__(
        self, C: int, num_classes: int, layers: int, criterion: nn.Module, steps: int = 4,
        multiplier: int | None = None, stem_multiplier: int = 3,
        primitives: tuple[str, ...] = PRIMITIVES, in_channels: int = 3,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self._C = C
        self._num_classes = num_classes
        self._layers = layers
        self._criterion = criterion
        self._steps = steps
        self._multiplier = steps if multiplier is None else multiplier
        self._stem_multiplier = stem_multiplier
        self._primitives = tuple(primitives)
        self._in_channels = in_channels
        self._device = torch.device(device)

        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_curr),
        )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            if i in [layers // 3, 2 * layers // 3]:
                C_curr *= 2
                reduction = True
            else:
                reduction = False
            cell = Cell(steps, self._multiplier, C_prev_prev, C_prev, C_curr, reduction,
                        reduction_prev, self._primitives)
            reduction_prev = reduction
            self.cells += [cell]
            C_prev_prev, C_prev = C_prev, self._multiplier * C_curr

        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self.to(self._device)
        self._initialize_alphas()

    def new(self) -> Network:
        model_new = Network(
            self._C, self._num_classes, self._layers, self._criterion, self._steps,
            self._multiplier, self._stem_multiplier, self._primitives, self._in_channels,
            self._device,
        )
        for x, y in zip(model_new.arch_parameters(), self.arch_parameters(), strict=True):
            x.data.copy_(y.data)
        return model_new

    def forward(self, input: Tensor) -> Tensor:
        s0 = s1 = self.stem(input)
        for cell in self.cells:
            if cell.reduction:
                weights = F.softmax(self.alphas_reduce, dim=-1)
            else:
                weights = F.softmax(self.alphas_normal, dim=-1)
            s0, s1 = s1, cell(s0, s1, weights)
        out = self.global_pooling(s1)
        logits = self.classifier(out.view(out.size(0), -1))
        return logits

    def _loss(self, input: Tensor, target: Tensor) -> Tensor:
        logits = self(input)
        return self._criterion(logits, target)

    def _initialize_alphas(self) -> None:
        k = sum(1 for i in range(self._steps) for _ in range(2 + i))
        num_ops = len(self._primitives)
        self.alphas_normal = (1e-3 * torch.randn(k, num_ops, device=self._device)).requires_grad_()
        self.alphas_reduce = (1e-3 * torch.randn(k, num_ops, device=self._device)).requires_grad_()
        self._arch_parameters = [self.alphas_normal, self.alphas_reduce]

    def arch_parameters(self) -> list[Tensor]:
        return self._arch_parameters
