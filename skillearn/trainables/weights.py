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
_SLOTS: WeakKeyDictionary[torch.nn.Module, dict[str, tuple[dict, str]]] = WeakKeyDictionary()
_NOT_SWAPPED = object()  # `_swapped_call` declined: fall back to `functional_call`


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


def _slots(net: torch.nn.Module) -> dict[str, tuple[dict, str]]:
    """Where each of `net`'s tensors is registered: name -> (its module's `_parameters` or
    `_buffers` dict, attribute), found once per module (as `_own_tensors` is)."""
    slots = _SLOTS.get(net)
    if slots is None:
        slots = {}
        for prefix, module in net.named_modules():
            for registry in (module._parameters, module._buffers):
                for attr, tensor in registry.items():
                    if tensor is not None:
                        slots[f"{prefix}.{attr}" if prefix else attr] = (registry, attr)
        _SLOTS[net] = slots
    return slots


def _swapped_call(
    net: torch.nn.Module,
    changed: Mapping[str, torch.Tensor],
    own: Mapping[str, torch.Tensor],
    args: tuple,
    kwargs: Mapping[str, object],
) -> object:
    """`functional_call(net, changed, ...)` for an untied module, without its per-call setup:
    the swap writes the same registry slots `functional_call` writes (a module's `_parameters`
    or `_buffers` entry), from a map built once, and restores them however the call ends.
    Returns `_NOT_SWAPPED` when a name is not one of the module's registered tensors or its slot
    no longer holds the tensor `own` knew (then `functional_call` handles it)."""
    slots = _slots(net)
    targets = []
    for key, tensor in changed.items():
        slot = slots.get(key)
        if slot is None or slot[0].get(slot[1]) is not own.get(key):
            return _NOT_SWAPPED
        targets.append((slot[0], slot[1], tensor))
    for registry, attr, tensor in targets:
        registry[attr] = tensor
    try:
        return net(*args, **kwargs)
    finally:
        for key, (registry, attr, _) in zip(changed, targets, strict=True):
            registry[attr] = own[key]


def call_with(
    net: torch.nn.Module,
    tensors: Mapping[str, torch.Tensor],
    args: tuple,
    kwargs: Mapping[str, object] | None = None,
) -> object:
    """`net(*args, **kwargs)` with the tensors of `tensors` that differ from its own swapped in.

    Per-pass overhead matters on small networks (the engine evaluates a loss 4-6 times per
    step): a loss at the module's current weights calls it directly, and a module without tied
    tensors swaps its registry slots directly (`_swapped_call`) instead of paying
    `functional_call`'s untie walk and accessor setup. Either way the same tensors are used.
    """
    own = _own_tensors(net)
    changed = {k: v for k, v in tensors.items() if own.get(k) is not v}
    if not changed:
        return net(*args, **(kwargs or {}))
    untied = _has_no_tied_tensors(net)
    if untied:
        out = _swapped_call(net, changed, own, args, kwargs or {})
        if out is not _NOT_SWAPPED:
            return out
    return functional_call(net, changed, args, dict(kwargs or {}), tie_weights=not untied)


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
