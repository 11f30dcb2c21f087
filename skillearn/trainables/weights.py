"""Several weight sets over one network: LFM's W1 and W2 share the architecture, not weights.

A weight set is a dict of tensors (parameters and BatchNorm buffers) run through the module with
`torch.func.functional_call`, so the engine can hand a loss unrolled weights without copying a
model.
"""

from __future__ import annotations

from collections.abc import Mapping
from weakref import WeakKeyDictionary

import torch
from torch.func import functional_call


def clone_weights(
    net: torch.nn.Module, exclude: Mapping[str, torch.Tensor] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Independent copies of `net`'s parameters (leaves requiring grad) and buffers."""
    skip = set(exclude or {})
    params = {
        k: p.detach().clone().requires_grad_(True)
        for k, p in net.named_parameters()
        if k not in skip
    }
    buffers = {k: b.detach().clone() for k, b in net.named_buffers()}
    return params, buffers


_OWN_TENSORS: WeakKeyDictionary[torch.nn.Module, dict[str, torch.Tensor]] = WeakKeyDictionary()
_UNTIED: WeakKeyDictionary[torch.nn.Module, bool] = WeakKeyDictionary()


def _own_tensors(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    own = _OWN_TENSORS.get(net)
    if own is None:
        own = {**dict(net.named_parameters()), **dict(net.named_buffers())}
        _OWN_TENSORS[net] = own
    return own


def _has_no_tied_tensors(net: torch.nn.Module) -> bool:
    """No parameter or buffer is registered under two names (then `functional_call` need not
    walk the module tree on every call to untie them: the same call, without that walk)."""
    untied = _UNTIED.get(net)
    if untied is None:
        named = [*net.named_parameters(remove_duplicate=False),
                 *net.named_buffers(remove_duplicate=False)]
        untied = len({id(t) for _, t in named}) == len(named)
        _UNTIED[net] = untied
    return untied


def call_with(
    net: torch.nn.Module,
    tensors: Mapping[str, torch.Tensor],
    args: tuple,
    kwargs: Mapping[str, object] | None = None,
) -> object:
    """`net(*args, **kwargs)` with the tensors of `tensors` that differ from its own swapped in.

    Per-pass overhead matters on small networks (the engine evaluates a loss 4-6 times per
    step): a loss at the module's current weights calls it directly, and a module without tied
    tensors skips `functional_call`'s untie walk. Either way the same tensors are used.
    """
    own = _own_tensors(net)
    changed = {k: v for k, v in tensors.items() if own.get(k) is not v}
    if not changed:
        return net(*args, **(kwargs or {}))
    return functional_call(net, changed, args, dict(kwargs or {}),
                           tie_weights=not _has_no_tied_tensors(net))


def run_with(
    net: torch.nn.Module,
    x: torch.Tensor,
    *tensor_sets: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """`net(x)` with its tensors replaced by the union of `tensor_sets` (later sets win).

    Only tensors that differ from the module's own are swapped in: a supernet has hundreds of
    parameters and a loss evaluated at the current weights should not pay for swapping them.
    """
    merged: dict[str, torch.Tensor] = {}
    for tensors in tensor_sets:
        merged.update(tensors)
    return call_with(net, merged, (x,))


def count_parameters(tensors: Mapping[str, torch.Tensor]) -> int:
    """Number of scalars in a weight set."""
    return sum(t.numel() for t in tensors.values())
