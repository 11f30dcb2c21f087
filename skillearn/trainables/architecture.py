"""The NAS side of a skill's report: what a skill with an architecture exposes, and what the
runner reports about it each epoch (entropy, the genotype, the alphas) as declared artifacts.

Skills without an architecture never see this; the generic runner only asks
`Built.architecture` whether there is one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from skillearn.artifacts import ArchitectureWeights, EpochReport, GenotypeArtifact
from skillearn.search_spaces.darts import Genotype, SuperNet, architecture_entropy


@dataclass
class ArchitectureState:
    """A searched architecture: its discrete genotype, its continuous weights (alpha logits,
    edges x ops per cell type) and the op names of their columns."""

    genotype: Callable[[], Genotype]
    alphas: Callable[[], dict[str, torch.Tensor]]
    ops: tuple[str, ...]

    @classmethod
    def of_supernet(cls, net: SuperNet) -> ArchitectureState:
        return cls(genotype=net.genotype, alphas=net.arch_parameters, ops=net.config.ops)


def architecture_report(architecture: ArchitectureState) -> EpochReport:
    """`arch_entropy` (mean softmax entropy over the architecture parameters), the genotype and
    the raw alpha logits: the matrices with one column per op (a backbone's extra parameters,
    such as PC-DARTS' edge weights, count in the entropy but are not op weights)."""
    alphas = {name: alpha.detach() for name, alpha in architecture.alphas().items()}
    entropy = float(sum(architecture_entropy(a) for a in alphas.values()) / len(alphas))
    weights = ArchitectureWeights(
        alphas={name: a.cpu().tolist() for name, a in alphas.items()
                if a.dim() == 2 and a.shape[1] == len(architecture.ops)},
        ops=list(architecture.ops), logits=True,
    )
    genotype = GenotypeArtifact(genotype=architecture.genotype().to_dict())
    return EpochReport(metrics={"arch_entropy": entropy}, artifacts=[genotype, weights])
