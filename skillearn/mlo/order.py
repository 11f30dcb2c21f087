"""The order in which one iteration steps the levels. Torch-free, so that checking a config's
`order` (the CLI, a sweep's validation) does not import torch."""

from __future__ import annotations

from collections.abc import Sequence

ORDERS = ("bottom_up", "top_down")


def update_order(order: str | Sequence[str], names: Sequence[str]) -> list[str]:
    """The level names in the order one iteration steps them.

    `order` is `bottom_up` (lowest level first), `top_down` (highest first), or an explicit
    sequence of every level name once — a list or a comma-separated string such as
    `"arch,w1,w2"` (the LFM code: B/V/r, then W1, then W2). Raises ValueError naming the
    levels when the sequence is not a permutation of them.
    """
    if isinstance(order, str) and order in ORDERS:
        return list(names) if order == "bottom_up" else list(reversed(names))
    sequence = [n.strip() for n in order.split(",")] if isinstance(order, str) else list(order)
    if sorted(sequence) != sorted(names):
        raise ValueError(
            f"unknown update order {order!r}: use bottom_up, top_down or every level name once, "
            f"comma-separated (levels: {','.join(names)})"
        )
    return sequence
