"""DARTS CNN cell search space: ops, supernet, genotypes, discrete network and diagrams."""

from .genotype import DARTS_V2, Genotype, architecture_entropy, derive_genotype, parse_genotype
from .network import DiscreteNetwork
from .ops import OPS, PRIMITIVES
from .space import PRESETS, REDUCED_OPS, SpaceConfig
from .supernet import SuperNet


def __getattr__(name: str):
    """Drawing pulls in matplotlib; load it only when a picture is asked for, so the engine
    path (and a GPU box without matplotlib) never pays for it."""
    if name in ("draw_cell", "draw_alpha_evolution"):
        from . import diagram

        return getattr(diagram, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DARTS_V2",
    "OPS",
    "PRESETS",
    "PRIMITIVES",
    "REDUCED_OPS",
    "DiscreteNetwork",
    "Genotype",
    "SpaceConfig",
    "SuperNet",
    "architecture_entropy",
    "derive_genotype",
    "parse_genotype",
    "draw_alpha_evolution",
    "draw_cell",
]
