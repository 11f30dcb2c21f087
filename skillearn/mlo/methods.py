"""The hypergradient methods, by name: the one list the engine, validation, the CLI and skills read.

A method is its mixed second-derivative product grad_u <grad_w f(w, u), M v> (see `hypergrad`
and `implicit`), where M says how the lower level w responds to its inputs u:
- unrolled methods (M = identity): through the one-step-unrolled w' = w - xi * grad_w f, a
  cotangent v on w' reaches u as -xi * grad_u <grad_w f, v>;
- implicit methods (marked with `@implicit`, M = H_ww^{-1}): the lower level is taken to be at
  a stationary point w*(u) of f, so dw*/du = -H_ww^{-1} grad2_wu f and v reaches u as
  -grad_u <grad_w f, H_ww^{-1} v>. The engine then does not unroll that level (its loss is
  read at the current w) and passes the product the level's step size as `step=`.
Adding a method is one function with `MixedProduct`'s signature plus one entry in
`HYPERGRADIENT_METHODS`; the `method` knob, every skill that takes second-order methods, and
`MultilevelProgram` accept it from then on. A method's own settings (iterations, tolerance)
arrive as keyword arguments from `MultilevelProgram(method_options={name: {...}})`.

An entry is the product itself or its "module:function" path, imported on first use (as skill
modules are), so that reading the names — the CLI's help, a sweep's validation — never imports
torch. `None` is first order: the lower levels are not unrolled (xi = 0) and no product is taken.
This module imports nothing heavy on purpose.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

if TYPE_CHECKING:
    import torch

    Tensors = Sequence[torch.Tensor]
    # (loss_at, w, inputs, v, radius, **options) -> grad_inputs <grad_w f(w, inputs), M v>;
    # `loss_at(w)` is f at other values of w, `radius` the perturbation size of
    # difference-based methods, `options` the method's own settings (see the module docstring).
    MixedProduct = Callable[..., list[torch.Tensor]]

# The built-in names, for type checkers; methods registered at run time are accepted as well.
MethodName = Literal["first_order", "finite_difference", "exact", "neumann", "conjugate_gradient"]

HYPERGRADIENT_METHODS: dict[str, MixedProduct | str | None] = {
    "first_order": None,
    "finite_difference": "skillearn.mlo.hypergrad:mixed_vjp_finite_difference",
    "exact": "skillearn.mlo.hypergrad:mixed_vjp_exact",
    "neumann": "skillearn.mlo.implicit:neumann",
    "conjugate_gradient": "skillearn.mlo.implicit:conjugate_gradient",
}

F = TypeVar("F", bound=Callable[..., Any])


def implicit(product: F) -> F:
    """Mark `product` as an implicit method: it multiplies v by an inverse Hessian H_ww^{-1}
    (or an approximation of it), so the engine reads the lower level at its current point
    instead of unrolling it, and gives the product that level's step size as `step=`."""
    product.implicit = True  # type: ignore[attr-defined]
    return product


def is_implicit(product: MixedProduct | None) -> bool:
    """Whether `product` is marked `@implicit` (False for first order)."""
    return bool(getattr(product, "implicit", False))


def mixed_product(method: str) -> MixedProduct | None:
    """The mixed second-derivative product of `method` (None for first order).

    Raises ValueError for a name that is not registered, listing the ones that are.
    """
    if method not in HYPERGRADIENT_METHODS:
        raise ValueError(
            f"unknown hypergradient method {method!r}; use one of {tuple(HYPERGRADIENT_METHODS)}"
        )
    entry = HYPERGRADIENT_METHODS[method]
    return _imported(entry) if isinstance(entry, str) else entry


@functools.cache
def _imported(path: str) -> MixedProduct:
    module, _, function = path.partition(":")
    return getattr(importlib.import_module(module), function)


class MethodNames(Sequence[str]):
    """The registered method names, read from the registry each time they are used.

    A live view rather than a tuple, so that knob choices and skill declarations made at import
    time still accept a method registered later. `second_order=True` keeps only the methods
    that send a hypergradient through the unrolled steps (the skills whose upper levels reach
    the loss only through a lower level's update cannot use first order).
    """

    def __init__(self, *, second_order: bool = False) -> None:
        self.second_order = second_order

    def _names(self) -> tuple[str, ...]:
        return tuple(name for name, entry in HYPERGRADIENT_METHODS.items()
                     if entry is not None or not self.second_order)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __repr__(self) -> str:
        return repr(self._names())


# Every method, and the ones that unroll (all but first_order).
METHODS = MethodNames()
SECOND_ORDER_METHODS = MethodNames(second_order=True)

