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


def _parse_cell(weights: Tensor, edge_ops: Sequence[Sequence[str]], nodes: int) -> tuple[Edge, ...]:
    """DARTS ``genotype()._parse`` on one cell's op strengths of shape (num_edges, n_ops).

    ``edge_ops[e]`` names the columns of edge ``e`` (the same op set on every edge in DARTS;
    P-DARTS prunes each edge to its own set). ``none`` is never chosen.
    """
    gene: list[Edge] = []
    start = 0
    for i in range(nodes):
        n_in = 2 + i
        best: list[tuple[float, str]] = []  # per input: (strength, op) of its best non-none op
        for j in range(n_in):
            names = edge_ops[start + j]
            keep = [k for k, name in enumerate(names) if name != "none"]
            if not keep:
                raise ValueError("cannot derive a genotype from an op set that only has 'none'")
            row = weights[start + j]
            k_best = max(keep, key=lambda k: (float(row[k]), -k))  # ties: the first op
            best.append((float(row[k_best]), names[k_best]))
        # Stable sort on -strength: ties go to the lower input index, as DARTS's sorted().
        order = sorted(range(n_in), key=lambda j: -best[j][0])
        for j in order[:2]:
            gene.append((best[j][1], j))
        start += n_in
    return tuple(gene)


def derive_from_strengths(
    normal: Tensor,
    reduce: Tensor,
    normal_ops: Sequence[Sequence[str]],
    reduce_ops: Sequence[Sequence[str]],
    nodes: int,
    max_normal_skips: int = 0,
) -> Genotype:
    """The DARTS rule on op strengths (softmax weights, possibly scaled per edge as PC-DARTS'
    edge normalisation does), with each edge's own op names.

    ``max_normal_skips > 0`` is P-DARTS' final restriction: while the normal cell holds more
    skip connections than that, the chosen skip with the smallest strength is struck out (its
    strength set to 0) and the cell derived again.
    """
    normal = normal.detach().float().cpu().clone()
    reduce = reduce.detach().float().cpu()
    normal_gene = _parse_cell(normal, normal_ops, nodes)
    while max_normal_skips and _skips(normal_gene) > max_normal_skips:
        weakest = min(
            (float(normal[row, list(normal_ops[row]).index("skip_connect")]), row)
            for row in _chosen_rows(normal_gene, "skip_connect")
        )[1]
        normal[weakest, list(normal_ops[weakest]).index("skip_connect")] = 0.0
        normal_gene = _parse_cell(normal, normal_ops, nodes)
    concat = tuple(range(2, 2 + nodes))
    return Genotype(normal=normal_gene, normal_concat=concat,
                    reduce=_parse_cell(reduce, reduce_ops, nodes), reduce_concat=concat)


def _skips(gene: Sequence[Edge]) -> int:
    return sum(op == "skip_connect" for op, _ in gene)


def _chosen_rows(gene: Sequence[Edge], op_name: str) -> list[int]:
    """Alpha rows of the genotype's edges that chose `op_name` (edge k feeds node k // 2)."""
    rows = []
    for k, (op, source) in enumerate(gene):
        node = k // 2
        if op == op_name:
            rows.append(node * (node + 3) // 2 + source)
    return rows


def skip_count(genotype: Genotype) -> int:
    """Skip connections in the normal cell: the count that signals DARTS' collapse."""
    return _skips(genotype.normal)


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
    if not any(op != "none" for op in ops):
        raise ValueError("cannot derive a genotype from an op set that only has 'none'")
    with torch.no_grad():
        w_normal = torch.softmax(alpha_normal.detach().float().cpu(), dim=-1)
        w_reduce = torch.softmax(alpha_reduce.detach().float().cpu(), dim=-1)
    per_edge = [ops] * expected[0]
    return derive_from_strengths(w_normal, w_reduce, per_edge, per_edge, nodes)


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


MAX_GENOTYPE_NODES = 16


def parse_genotype(text: str) -> Genotype:
    """A genotype from untrusted JSON, checked fully (ValueError naming the first problem):
    the four keys, two `[op, input]` edges per node with a known op and an input that exists
    at that node, and concat indices of distinct intermediate nodes — so a malformed file fails
    here, not halfway into building the network."""
    from .ops import OPS

    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"not JSON ({err})") from None
    keys = ("normal", "normal_concat", "reduce", "reduce_concat")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise ValueError(f"a genotype is a JSON object with the keys {', '.join(keys)}")
    for cell in ("normal", "reduce"):
        edges, concat = data[cell], data[f"{cell}_concat"]
        if not isinstance(edges, list) or not edges or len(edges) % 2:
            raise ValueError(f"{cell}: needs a non-empty list with two edges per node")
        nodes = len(edges) // 2
        if nodes > MAX_GENOTYPE_NODES:
            raise ValueError(f"{cell}: {nodes} nodes, at most {MAX_GENOTYPE_NODES} are supported")
        for k, edge in enumerate(edges):
            if (not isinstance(edge, list) or len(edge) != 2 or not isinstance(edge[0], str)
                    or not isinstance(edge[1], int) or isinstance(edge[1], bool)):
                raise ValueError(f"{cell} edge {k}: expected [op name, input index], "
                                 f"got {str(edge)[:60]}")
            op, source = edge
            if op not in OPS:
                raise ValueError(f"{cell} edge {k}: unknown op {op[:40]!r}; known: "
                                 f"{', '.join(OPS)}")
            if not 0 <= source < 2 + k // 2:
                raise ValueError(f"{cell} edge {k} (node {k // 2}) reads state {source}, which "
                                 f"does not exist there (0 .. {1 + k // 2})")
        if (not isinstance(concat, list) or not concat
                or any(not isinstance(i, int) or isinstance(i, bool) for i in concat)
                or len(set(concat)) != len(concat)
                or any(not 2 <= i < 2 + nodes for i in concat)):
            raise ValueError(f"{cell}_concat: expected distinct node indices in 2 .. "
                             f"{1 + nodes}, got {str(concat)[:60]}")
    return Genotype.from_dict(data)
