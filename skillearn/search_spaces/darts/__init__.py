"""DARTS CNN cell search space: ops, supernet, genotypes, discrete network and diagrams."""

from .diagram import draw_alpha_evolution, draw_cell
from .genotype import DARTS_V2, Genotype, architecture_entropy, derive_genotype
from .network import DiscreteNetwork
from .ops import OPS, PRIMITIVES
from .space import SpaceConfig
from .supernet import SuperNet

__all__ = [
    "DARTS_V2",
    "OPS",
    "PRIMITIVES",
    "DiscreteNetwork",
    "Genotype",
    "SpaceConfig",
    "SuperNet",
    "architecture_entropy",
    "derive_genotype",
    "draw_alpha_evolution",
    "draw_cell",
]
