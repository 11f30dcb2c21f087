"""Certified bounds on a DARTS supernet's true-class margin over an l_inf ball (DSRNA's CB).

Two bound families, both differentiable in the architecture alphas and the weights, because
DSRNA descends `val_loss - gamma * lower_bound`:

- ``ibp``: interval bound propagation (each activation gets a box [l, u]);
- ``crown``: linear relaxation in the style of CNN-Cert/CROWN (the thesis' CB, Eqs. 1.1-1.40),
  propagated *forward*: every activation carries linear functions of the input
  ``lA x + lb <= h(x) <= uA x + ub``. ReLUs use CROWN's adaptive relaxation on the tightest
  box known (the box of IBP intersected with the concretised linear bounds), max-pools keep the
  linear lower bound of the element with the largest lower bound. The IBP box is carried along
  and the final margin bound is the better of the two, so ``crown >= ibp`` always.

Forward mode costs ``input_dim`` times a forward pass (64 on 8x8 digits; CIFAR's 3072 makes
``crown`` a certification tool, not a search-time regulariser there: use ``ibp``).

BatchNorm is bounded in eval mode (running statistics): a train-mode BN's output depends on
the whole batch, so no per-example certificate exists for it.

The network is read from its tensors by name (DARTS' edge-by-edge names; a fused supernet's
tensors are mapped with ``SuperNet.to_edgewise``, slices of the live tensors, so gradients
reach the fused parameters), so unrolled weights can be bounded without copying a module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from skillearn.search_spaces.darts import SuperNet
from skillearn.search_spaces.darts.ops import CONV_SPECS

BOUND_METHODS = ("ibp", "crown")
BN_EPS = 1e-5


@dataclass
class Bounds:
    """Box ``[lower, upper]`` of an activation (N, *S) and, for ``crown``, linear bounds in the
    flattened input: ``lA`` / ``uA`` of shape (N, D, *S), offsets ``lb`` / ``ub`` (N, *S)."""

    lower: Tensor
    upper: Tensor
    lA: Tensor | None = None
    lb: Tensor | None = None
    uA: Tensor | None = None
    ub: Tensor | None = None

    @property
    def linear(self) -> bool:
        return self.lA is not None


@dataclass
class InputBox:
    """The input set: per-coordinate ``[x_lo, x_hi]`` (an l_inf ball, clipped to the data's
    valid range), flattened (N, D). Linear bounds are functions of ``delta = x - center``: at
    a small radius the offsets carry the value and the coefficients only the spread, so float
    cancellation in ``A . x`` (coefficients of 1e6 behind a searched supernet's BatchNorms)
    cannot produce a bound above the true margin."""

    lo: Tensor
    hi: Tensor

    @property
    def center(self) -> Tensor:
        return (self.hi + self.lo) / 2

    def concretize(self, a: Tensor, b: Tensor, upper: bool) -> Tensor:
        """min (or max) of ``a . delta + b`` over the box, for ``a`` (N, D, *S)."""
        shape = (a.shape[0], a.shape[1]) + (1,) * (a.dim() - 2)
        radius = ((self.hi - self.lo) / 2).reshape(shape)
        spread = (a.abs() * radius).sum(1)
        return b + spread if upper else b - spread


# --------------------------------------------------------------------------- bound primitives
def _flat_apply(fn: Callable[[Tensor], Tensor], a: Tensor) -> Tensor:
    """Apply an activation-shaped map to linear coefficients (N, D, *S) -> (N, D, *S')."""
    n, d = a.shape[:2]
    out = fn(a.reshape(n * d, *a.shape[2:]))
    return out.reshape(n, d, *out.shape[1:])


def positive_map(b: Bounds, fn: Callable[[Tensor], Tensor]) -> Bounds:
    """A linear map with non-negative coefficients (avg-pool, slicing, padding, mean): it
    maps lower to lower and upper to upper."""
    if not b.linear:
        return Bounds(fn(b.lower), fn(b.upper))
    return Bounds(fn(b.lower), fn(b.upper), _flat_apply(fn, b.lA), fn(b.lb),
                  _flat_apply(fn, b.uA), fn(b.ub))


def signed_linear(b: Bounds, apply: Callable[[Tensor, Tensor], Tensor], weight: Tensor,
                  bias: Tensor | None = None) -> Bounds:
    """``apply(x, weight) + bias`` with ``apply`` linear in both (a conv, a per-channel scale):
    positive weights carry lower to lower, negative ones upper to lower."""
    pos, neg = weight.clamp(min=0), weight.clamp(max=0)

    def add_bias(t: Tensor) -> Tensor:
        return t if bias is None else t + bias

    center, radius = (b.upper + b.lower) / 2, (b.upper - b.lower) / 2
    mid, rad = add_bias(apply(center, weight)), apply(radius, weight.abs())
    if not b.linear:
        return Bounds(mid - rad, mid + rad)

    def both(t_pos: Tensor, t_neg: Tensor, flat: bool) -> Tensor:
        if flat:
            return _flat_apply(lambda t: apply(t, pos), t_pos) + _flat_apply(
                lambda t: apply(t, neg), t_neg)
        return apply(t_pos, pos) + apply(t_neg, neg)

    return Bounds(mid - rad, mid + rad,
                  both(b.lA, b.uA, True), add_bias(both(b.lb, b.ub, False)),
                  both(b.uA, b.lA, True), add_bias(both(b.ub, b.lb, False)))


def tighten(b: Bounds, box: InputBox) -> Bounds:
    """The box of ``b`` intersected with its concretised linear bounds (both are sound)."""
    if not b.linear:
        return b
    lower = torch.maximum(b.lower, box.concretize(b.lA, b.lb, upper=False))
    upper = torch.minimum(b.upper, box.concretize(b.uA, b.ub, upper=True))
    return Bounds(lower, upper, b.lA, b.lb, b.uA, b.ub)


def relu(b: Bounds, box: InputBox) -> Bounds:
    """ReLU: exact on the box; linear bounds by CROWN's relaxation (upper: the chord through
    (l, 0) and (u, u); lower: slope 1 when u > -l else 0, for unstable neurons)."""
    b = tighten(b, box)
    lo, u = b.lower, b.upper
    out_l, out_u = lo.clamp(min=0), u.clamp(min=0)
    if not b.linear:
        return Bounds(out_l, out_u)
    active, unstable = lo >= 0, (lo < 0) & (u > 0)
    chord = u.clamp(min=0) / (u - lo).clamp(min=1e-12)
    up_slope = torch.where(active, torch.ones_like(u), torch.where(unstable, chord,
                                                                   torch.zeros_like(u)))
    up_shift = torch.where(unstable, -chord * lo, torch.zeros_like(u))
    low_slope = torch.where(active | (unstable & (u > -lo)), torch.ones_like(lo),
                            torch.zeros_like(lo))
    return Bounds(out_l, out_u, b.lA * low_slope.unsqueeze(1), b.lb * low_slope,
                  b.uA * up_slope.unsqueeze(1), b.ub * up_slope + up_shift)


def add(terms: list[tuple[Tensor | float, Bounds]]) -> Bounds:
    """``sum_k w_k * b_k`` for non-negative weights w_k (a mixed op's softmaxed alphas)."""
    def total(get: Callable[[Bounds], Tensor]) -> Tensor:
        out = None
        for w, b in terms:
            t = get(b) * w  # a 0-dim weight broadcasts over boxes and coefficients
            out = t if out is None else out + t
        return out

    lower = total(lambda b: b.lower)
    upper = total(lambda b: b.upper)
    if not terms[0][1].linear:
        return Bounds(lower, upper)
    return Bounds(lower, upper, total(lambda b: b.lA), total(lambda b: b.lb),
                  total(lambda b: b.uA), total(lambda b: b.ub))


def cat(parts: list[Bounds]) -> Bounds:
    """Channel concatenation (dim 1 of activations, dim 2 of linear coefficients)."""
    lower, upper = torch.cat([p.lower for p in parts], 1), torch.cat([p.upper for p in parts], 1)
    if not parts[0].linear:
        return Bounds(lower, upper)
    return Bounds(lower, upper,
                  torch.cat([p.lA for p in parts], 2), torch.cat([p.lb for p in parts], 1),
                  torch.cat([p.uA for p in parts], 2), torch.cat([p.ub for p in parts], 1))


def max_pool(b: Bounds, box: InputBox, stride: int) -> Bounds:
    """3x3 max-pool (padding 1): monotone on the box; linearly, max >= the element whose lower
    bound is largest (its linear lower bound), and max <= the largest upper bound."""
    b = tighten(b, box)
    lower, idx = F.max_pool2d(b.lower, 3, stride, 1, return_indices=True)
    upper = F.max_pool2d(b.upper, 3, stride, 1)
    if not b.linear:
        return Bounds(lower, upper)
    n, d, c = b.lA.shape[:3]
    flat_idx = idx.flatten(2)  # (N, C, H'W') positions in H*W
    la = b.lA.flatten(3).gather(3, flat_idx.unsqueeze(1).expand(n, d, c, -1))
    lb = b.lb.flatten(2).gather(2, flat_idx)
    return Bounds(lower, upper, la.reshape(n, d, *lower.shape[1:]), lb.reshape(lower.shape),
                  torch.zeros_like(la).reshape(n, d, *lower.shape[1:]), upper)


# ------------------------------------------------------------------------------ DARTS layers
class _Reader:
    """Bounds through DARTS' layers, reading tensors by their edge-by-edge names."""

    def __init__(self, tensors: Mapping[str, Tensor], box: InputBox) -> None:
        self.t, self.box = tensors, box

    def conv(self, b: Bounds, key: str, stride: int = 1, padding: int = 0, dilation: int = 1,
             groups: int = 1) -> Bounds:
        def apply(x: Tensor, w: Tensor) -> Tensor:
            return F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation,
                            groups=groups)

        return signed_linear(b, apply, self.t[f"{key}.weight"], None)

    def batch_norm(self, b: Bounds, key: str) -> Bounds:
        """Eval-mode BN is the affine map x * scale + shift per channel (Eqs. 1.6-1.7)."""
        mean, var = self.t[f"{key}.running_mean"], self.t[f"{key}.running_var"]
        scale = torch.rsqrt(var + BN_EPS)
        shift = -mean * scale
        if f"{key}.weight" in self.t:
            scale = scale * self.t[f"{key}.weight"]
            shift = shift * self.t[f"{key}.weight"] + self.t[f"{key}.bias"]

        def apply(x: Tensor, s: Tensor) -> Tensor:
            return x * s.view(1, -1, 1, 1)

        return signed_linear(b, apply, scale, shift.view(1, -1, 1, 1))

    def relu_conv_bn(self, b: Bounds, key: str) -> Bounds:
        return self.batch_norm(self.conv(relu(b, self.box), f"{key}.op.1"), f"{key}.op.2")

    def factorized_reduce(self, b: Bounds, key: str) -> Bounds:
        x = relu(b, self.box)
        h, w = x.lower.shape[-2:]

        def shifted(t: Tensor) -> Tensor:
            return F.pad(t[..., 1:, 1:], (0, w % 2, 0, h % 2))

        def even(t: Tensor) -> Tensor:
            return t[..., ::2, ::2]

        first = self.conv(positive_map(x, even), f"{key}.conv_1")
        second = self.conv(positive_map(positive_map(x, shifted), even), f"{key}.conv_2")
        return self.batch_norm(cat([first, second]), f"{key}.bn")

    def op(self, b: Bounds, name: str, key: str, stride: int) -> Bounds:
        if name == "skip_connect":
            return b if stride == 1 else self.factorized_reduce(b, key)
        if name == "avg_pool_3x3":
            pooled = positive_map(b, lambda t: F.avg_pool2d(t, 3, stride, 1,
                                                            count_include_pad=False))
            return self.batch_norm(pooled, f"{key}.1")
        if name == "max_pool_3x3":
            return self.batch_norm(max_pool(b, self.box, stride), f"{key}.1")
        kernel, dilation, padding, separable = CONV_SPECS[name]
        channels = b.lower.shape[1]
        x = self.conv(relu(b, self.box), f"{key}.op.1", stride, padding, dilation, channels)
        x = self.batch_norm(self.conv(x, f"{key}.op.2"), f"{key}.op.3")
        if not separable:
            return x
        x = self.conv(relu(x, self.box), f"{key}.op.5", 1, padding, dilation, channels)
        return self.batch_norm(self.conv(x, f"{key}.op.6"), f"{key}.op.7")


def supernet_bounds(net: SuperNet, tensors: Mapping[str, Tensor], box: InputBox,
                    x_shape: tuple[int, ...], linear: bool) -> tuple[Bounds, Tensor, Tensor]:
    """Bounds of the supernet's pooled features over ``box``; returns them with the
    classifier's weight and bias. ``tensors``: every parameter and buffer, edge-by-edge names."""
    cfg = net.config
    n, d = box.lo.shape
    x_lo, x_hi = box.lo.reshape(x_shape), box.hi.reshape(x_shape)
    b = Bounds(x_lo, x_hi)
    if linear:
        eye = torch.eye(d, dtype=x_lo.dtype, device=x_lo.device).expand(n, d, d)
        center = box.center.reshape(x_shape)  # x = center + delta
        b = Bounds(x_lo, x_hi, eye.reshape(n, d, *x_shape[1:]), center,
                   eye.reshape(n, d, *x_shape[1:]), center)
    r = _Reader(tensors, box)
    stem = r.batch_norm(r.conv(b, "stem.0", padding=1), "stem.1")
    w_normal = torch.softmax(tensors["alpha_normal"], dim=-1)
    w_reduce = torch.softmax(tensors["alpha_reduce"], dim=-1)
    s0 = s1 = stem
    reductions = set(cfg.reduction_cells())
    reduction_prev = False
    for i in range(cfg.cells):
        reduction = i in reductions
        key = f"cells.{i}"
        if reduction_prev:
            p0 = r.factorized_reduce(s0, f"{key}.preprocess0")
        else:
            p0 = r.relu_conv_bn(s0, f"{key}.preprocess0")
        states = [p0, r.relu_conv_bn(s1, f"{key}.preprocess1")]
        weights = w_reduce if reduction else w_normal
        offset = 0
        for _ in range(cfg.nodes):
            terms = []
            for j, state in enumerate(states):
                stride = 2 if reduction and j < 2 else 1
                edge = offset + j
                for k, name in enumerate(cfg.ops):
                    if name == "none":  # a zero tensor: its term is exactly zero
                        continue
                    out = r.op(state, name, f"{key}._ops.{edge}._ops.{k}", stride)
                    terms.append((weights[edge, k], out))
            offset += len(states)
            states.append(add(terms))
        s0, s1 = s1, cat(states[2:])
        reduction_prev = reduction
    features = positive_map(s1, lambda t: t.mean(dim=(-2, -1)))
    return features, tensors["classifier.weight"], tensors["classifier.bias"]


def edgewise_tensors(net: SuperNet, tensors: Mapping[str, Tensor] | None = None
                     ) -> dict[str, Tensor]:
    """Every parameter and buffer of ``net`` (``tensors`` substituted: unrolled weights,
    alphas) under DARTS' edge-by-edge names."""
    merged = {**dict(net.named_buffers()), **dict(net.named_parameters()), **(tensors or {})}
    return net.to_edgewise(merged)


def margin_lower_bound(net: SuperNet, x: Tensor, y: Tensor, eps: Tensor | float,
                       method: str = "crown", tensors: Mapping[str, Tensor] | None = None,
                       valid_range: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Per example, a lower bound of ``min_{j != y} f_y(x') - f_j(x')`` over every ``x'`` with
    ``|x' - x|_inf <= eps`` (eps: a scalar, or broadcastable to x, e.g. per example or per
    channel), clipped to ``valid_range``. Positive means certified robust at eps."""
    if method not in BOUND_METHODS:
        raise ValueError(f"bound method {method!r}; use one of {', '.join(BOUND_METHODS)}")
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    lo, hi = x - eps_t, x + eps_t
    if valid_range is not None:
        lo, hi = torch.maximum(lo, valid_range[0]), torch.minimum(hi, valid_range[1])
    box = InputBox(lo.flatten(1), hi.flatten(1))
    named = edgewise_tensors(net, tensors)
    features, weight, bias = supernet_bounds(net, named, box, tuple(x.shape),
                                             linear=method == "crown")
    spec = weight[y].unsqueeze(1) - weight.unsqueeze(0)  # (N, K, F): row j is W_y - W_j
    offset = bias[y].unsqueeze(1) - bias.unsqueeze(0)
    center, radius = (features.upper + features.lower) / 2, (features.upper - features.lower) / 2
    margins = (torch.einsum("nkf,nf->nk", spec, center)
               - torch.einsum("nkf,nf->nk", spec.abs(), radius) + offset)
    if features.linear:
        pos, neg = spec.clamp(min=0), spec.clamp(max=0)
        la = (torch.einsum("nkf,ndf->ndk", pos, features.lA)
              + torch.einsum("nkf,ndf->ndk", neg, features.uA))
        lb = (torch.einsum("nkf,nf->nk", pos, features.lb)
              + torch.einsum("nkf,nf->nk", neg, features.ub) + offset)
        margins = torch.maximum(margins, box.concretize(la, lb, upper=False))
    # A lower bound can never exceed the margin at a point of the ball (the box's centre, an
    # exact forward pass with eval-mode BN): this also caps float rounding, which a supernet
    # whose bounds amplify the radius by ~1e9 can blow up to O(1) in float32.
    centre = InputBox(box.center, box.center)
    point, _, _ = supernet_bounds(net, named, centre, tuple(x.shape), linear=False)
    margins = torch.minimum(margins, torch.einsum("nkf,nf->nk", spec, point.lower) + offset)
    own = F.one_hot(y, margins.shape[1]).bool()
    return margins.masked_fill(own, float("inf")).amin(dim=1)


def float64_tensors(net: SuperNet, tensors: Mapping[str, Tensor] | None = None
                    ) -> dict[str, Tensor]:
    """Every tensor of ``net`` (``tensors`` substituted) in float64, for certification."""
    merged = {**dict(net.named_buffers()), **dict(net.named_parameters()), **(tensors or {})}
    return {k: v.detach().double() if v.is_floating_point() else v for k, v in merged.items()}


@torch.no_grad()
def certified_radius(net: SuperNet, x: Tensor, y: Tensor, method: str = "crown",
                     max_eps: float = 1.0, min_eps: float = 1e-5, steps: int = 10,
                     tensors: Mapping[str, Tensor] | None = None,
                     valid_range: tuple[Tensor, Tensor] | None = None,
                     scale: Tensor | float = 1.0) -> Tensor:
    """Per example, the largest eps (in units where the ball is ``eps * scale``, e.g. pixel
    units with ``scale = 1/std``) at which the margin bound was verified positive, found by
    bisection of log(eps) on [min_eps, max_eps] (radii of searched supernets span decades);
    0 when not even ``min_eps`` is certified (e.g. a misclassified example). Every value
    returned was verified -- in float64, as float32 rounding is amplified like the radius --
    so it is a certified radius, not an estimate."""
    tensors = float64_tensors(net, tensors)
    x = x.double()
    if valid_range is not None:
        valid_range = (valid_range[0].double(), valid_range[1].double())
    if isinstance(scale, Tensor):
        scale = scale.double()
    n = x.shape[0]
    shape = (n,) + (1,) * (x.dim() - 1)

    def certified(eps: Tensor) -> Tensor:
        return margin_lower_bound(net, x, y, eps.reshape(shape) * scale, method, tensors,
                                  valid_range) > 0

    lo = torch.full((n,), float(min_eps), dtype=x.dtype, device=x.device).log()
    hi = torch.full_like(lo, float(max_eps)).log()
    found = certified(lo.exp())
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = certified(mid.exp())
        lo = torch.where(ok, mid, lo)
        hi = torch.where(ok, hi, mid)
    return torch.where(found, lo.exp(), torch.zeros_like(lo))
