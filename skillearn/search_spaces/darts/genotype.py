"""Discrete cell descriptions (genotypes) and how to read them off the continuous alphas."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Edge = tuple[str, int]


@dataclass(frozen=True)
class Genotype:
    """A DARTS cell pair: per intermediate node two ``(op, input_index)`` edges, in node order.

    Input index 0/1 are the cell inputs c_{k-2}/c_{k-1}; index 2 + i is intermediate node i.
    ``*_concat`` lists the states concatenated into the cell output.
    """

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        # Normalise lists (e.g. from JSON) to tuples so genotypes compare equal and hash.
        for name in ("normal", "reduce"):
            edges = tuple((str(op), int(j)) for op, j in getattr(self, name))
            object.__setattr__(self, name, edges)
        for name in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, name, tuple(int(i) for i in getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """Plain lists/strings/ints, safe for JSON, YAML and MLflow params."""
        return {
            "normal": [[op, j] for op, j in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, j] for op, j in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Genotype:
        return cls(
            normal=d["normal"],
            normal_concat=d["normal_concat"],
            reduce=d["reduce"],
            reduce_concat=d["reduce_concat"],
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str) -> Genotype:
        return cls.from_dict(json.loads(s))


def _parse_cell(weights: Tensor, ops: Sequence[str], nodes: int) -> tuple[Edge, ...]:
    """DARTS ``genotype()._parse`` on one cell's softmax weights of shape (num_edges, n_ops)."""
    keep = [k for k, name in enumerate(ops) if name != "none"]
    if not keep:
        raise ValueError("cannot derive a genotype from an op set that only has 'none'")
    gene: list[Edge] = []
    start = 0
    for i in range(nodes):
        n_in = 2 + i
        w = weights[start : start + n_in][:, keep]  # (n_in, n_keep) without 'none'
        strength = w.max(dim=1).values
        # Stable sort on -strength: ties go to the lower input index, as DARTS's sorted().
        order = sorted(range(n_in), key=lambda j: -float(strength[j]))
        for j in order[:2]:
            gene.append((ops[keep[int(w[j].argmax())]], j))
        start += n_in
    return tuple(gene)


def derive_genotype(
    alpha_normal: Tensor, alpha_reduce: Tensor, ops: Sequence[str], nodes: int
) -> Genotype:
    """Discretise alphas with the DARTS rule.

    Per intermediate node keep the two incoming edges whose strongest non-``none`` op has the
    largest softmax weight, and on each the argmax non-``none`` op. ``none`` is never chosen.
    """
    ops = list(ops)
    expected = (sum(2 + i for i in range(nodes)), len(ops))
    for name, alpha in (("alpha_normal", alpha_normal), ("alpha_reduce", alpha_reduce)):
        if tuple(alpha.shape) != expected:
            raise ValueError(f"{name} has shape {tuple(alpha.shape)}, expected {expected}")
    with torch.no_grad():
        w_normal = torch.softmax(alpha_normal.detach().float().cpu(), dim=-1)
        w_reduce = torch.softmax(alpha_reduce.detach().float().cpu(), dim=-1)
    concat = tuple(range(2, 2 + nodes))
    return Genotype(
        normal=_parse_cell(w_normal, ops, nodes),
        normal_concat=concat,
        reduce=_parse_cell(w_reduce, ops, nodes),
        reduce_concat=concat,
    )


def architecture_entropy(alpha: Tensor) -> Tensor:
    """Mean over edges of the entropy of softmax(alpha) (a differentiable scalar tensor).

    High means the search is still undecided; it falls as alphas sharpen, so it is a cheap
    convergence signal (and can be used as a regulariser).
    """
    log_p = torch.log_softmax(alpha, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1).mean()


DARTS_V2 = Genotype(
    normal=(
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ),
    reduce_concat=(2, 3, 4, 5),
)
"""The second-order DARTS CIFAR-10 cell (quark0/darts ``genotypes.py``), for reference."""
