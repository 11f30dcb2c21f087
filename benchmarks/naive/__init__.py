"""A faithful modern-torch port of quark0/darts (cnn/operations.py, model_search.py,
architect.py): the naive reference the benchmarks measure skillearn against.

Kept deliberately unoptimised: MixedOp runs every op including ``none``'s ``x.mul(0.)``, the
second-order step deep-copies the network through ``new()`` + ``load_state_dict`` and flattens
parameters with ``torch.cat`` as the original does.
"""

from .architect import Architect, ArchitectSettings
from .model_search import Network
from .operations import OPS, PRIMITIVES

__all__ = ["OPS", "PRIMITIVES", "Architect", "ArchitectSettings", "Network"]
