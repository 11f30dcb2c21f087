"""The multilevel optimisation engine: levels are data, the program orders and steps them."""

from skillearn.mlo.level import Batches, Level, LossFn, ParamDict, Params
from skillearn.mlo.program import METHODS, ORDERS, MultilevelProgram

__all__ = [
    "METHODS",
    "ORDERS",
    "Batches",
    "Level",
    "LossFn",
    "MultilevelProgram",
    "ParamDict",
    "Params",
]
