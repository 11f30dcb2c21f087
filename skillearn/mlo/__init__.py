"""The multilevel optimisation engine: levels are data, the program orders and steps them.

The method registry needs no torch and is imported here; the rest on first use, so that reading
the method names (the CLI's help, a sweep's validation) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from skillearn.mlo.methods import (
    HYPERGRADIENT_METHODS,
    METHODS,
    SECOND_ORDER_METHODS,
    MethodName,
)

if TYPE_CHECKING:
    from skillearn.mlo.level import Batches, Level, LossFn, ParamDict, Params, Projection
    from skillearn.mlo.order import ORDERS
    from skillearn.mlo.program import MultilevelProgram
    from skillearn.mlo.projections import linf_ball
    from skillearn.mlo.unroll import UnrollError

_LAZY = {
    "Batches": "level", "Level": "level", "LossFn": "level", "ParamDict": "level",
    "Params": "level", "Projection": "level", "ORDERS": "order",
    "MultilevelProgram": "program", "linf_ball": "projections", "UnrollError": "unroll",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"skillearn.mlo.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'skillearn.mlo' has no attribute {name!r}")


__all__ = [
    "HYPERGRADIENT_METHODS",
    "METHODS",
    "ORDERS",
    "SECOND_ORDER_METHODS",
    "Batches",
    "Level",
    "LossFn",
    "MethodName",
    "MultilevelProgram",
    "ParamDict",
    "Params",
    "Projection",
    "UnrollError",
    "linf_ball",
]
