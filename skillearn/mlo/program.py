"""The multilevel engine: orders the levels, unrolls the lower ones, and steps each optimizer.

A level's gradient is computed in three passes:
1. forward: every level it (transitively) reads is unrolled one step, lowest first, each at the
   unrolled values of the levels *it* reads;
2. its own loss at those unrolled values gives the direct gradient and a cotangent v per read
   level;
3. reverse: each read level, highest first, turns its cotangent into contributions
   -xi * grad_u <grad_w f, v> for the updating level's parameters and for the levels below it
   (see `hypergrad`).
With `first_order` the unrolled values are the current ones (xi = 0) and pass 3 is skipped.
With an implicit method (`neumann`, `conjugate_gradient`) a level is not unrolled either: it is
taken to be at a stationary point of its loss, read at its current values, and pass 3 sends the
cotangent through its implicit response -H^{-1} grad2_wu f instead of -xi grad2_wu f (see
`implicit` for how that chains through intermediate levels).
Each lower level's method is its own `Level.method` or else the program's, so one program can
unroll one level and differentiate another implicitly. The method is looked up by name in
`methods.HYPERGRADIENT_METHODS`; the engine never branches on a method's name. A level that
maximises descends -loss in all three passes.

`reuse_unroll_grad=True` (opt-in) lets a lower level's real step reuse the gradient its upper
level computed for the unroll in the same iteration, saving a forward/backward per level. The
gradient was taken before the upper level moved, so with `top_down` order this changes DARTS'
update order (the lower step sees the old architecture); it is off by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from skillearn.mlo.level import Batches, Level, ParamDict, params_view
from skillearn.mlo.methods import METHODS, MethodName, is_implicit, mixed_product
from skillearn.mlo.order import update_order
from skillearn.mlo.unroll import UnrolledStep, check_unrollable, unrolled_step

if TYPE_CHECKING:
    from skillearn.mlo.methods import MixedProduct
    from skillearn.mlo.timing import LevelTimer

class MultilevelProgram:
    """An ordered list of levels (lowest first) and the hypergradient method they share.

    `order="bottom_up"` updates the lowest level first (the papers' Algorithm 1);
    `order="top_down"` updates the highest first, as the DARTS code does; an explicit sequence
    of level names gives any other order (see `update_order`).
    `method` is used for every lower level without a `Level.method` of its own;
    `method_options` gives a method's settings by name, e.g.
    `{"neumann": {"iterations": 5, "alpha": 0.01}}` (keyword arguments of its product).
    """

    def __init__(
        self,
        levels: Sequence[Level],
        method: MethodName = "finite_difference",
        order: str | Sequence[str] = "bottom_up",
        fd_radius: float = 0.01,
        reuse_unroll_grad: bool = False,
        method_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        for chosen in (method, *(level.method for level in levels if level.method)):
            if chosen not in METHODS:
                raise ValueError(f"unknown hypergradient method {chosen!r}; use one of {METHODS}")
        self.levels: dict[str, Level] = {}
        for level in levels:
            if level.name in self.levels:
                raise ValueError(f"two levels are named {level.name!r}")
            for read in level.reads_lower:
                if read not in self.levels:
                    raise ValueError(
                        f"level {level.name!r} reads {read!r}, which is not a lower level; "
                        "list levels lowest first"
                    )
            self.levels[level.name] = level
        for level in self.levels.values():
            if any(level.name in other.reads_lower for other in self.levels.values()):
                check_unrollable(level)
        self.method = method
        self.order = order
        self.sequence = update_order(order, list(self.levels))  # level names, stepping order
        self.fd_radius = fd_radius
        self.reuse_unroll_grad = reuse_unroll_grad
        self.method_options = {name: dict(options)
                               for name, options in (method_options or {}).items()}
        self.iteration = 0
        self._stepping = False  # gradients are cached for reuse only inside `step`
        # levels that skip their steps for now (an architecture warm-up), and an optional
        # `timing.LevelTimer` that sums each level's step time
        self.paused: set[str] = set()
        self.timer: LevelTimer | None = None
        # level name -> (iteration, gradient, loss) from an unroll, for reuse_unroll_grad
        self._unroll_cache: dict[str, tuple[int, ParamDict, torch.Tensor]] = {}

    # ----------------------------------------------------------------------------------------
    def step(self, batches: Batches) -> dict[str, torch.Tensor]:
        """One multilevel iteration: every level that is due takes one optimizer step.

        Returns each stepped level's loss (detached tensors: no host sync on the hot path).
        """
        losses: dict[str, torch.Tensor] = {}
        self._stepping = True
        try:
            for name in self.sequence:
                level = self.levels[name]
                if self.iteration % level.every or name in self.paused:
                    continue
                if self.timer is None:
                    grads, loss = self._reused(name) or self.gradient(name, batches)
                    self._apply(level, grads)
                else:
                    with self.timer(name, next(iter(level.params.values())).device):
                        grads, loss = self._reused(name) or self.gradient(name, batches)
                        self._apply(level, grads)
                losses[name] = loss
        finally:
            self._stepping = False
            self._unroll_cache.clear()
        self.iteration += 1
        return losses

    def _reused(self, name: str) -> tuple[ParamDict, torch.Tensor] | None:
        """This iteration's unroll gradient of `name`, when reuse is on and it is exact to do:
        no lower level's loss reads `name`, so its own gradient has no hypergradient part."""
        cached = self._unroll_cache.get(name)
        if not self.reuse_unroll_grad or cached is None or cached[0] != self.iteration:
            return None
        if self._reachable(name, self._closure(name)):
            return None
        return cached[1], cached[2]

    def end_epoch(self) -> None:
        """Advance every level's learning-rate schedule."""
        for level in self.levels.values():
            if level.scheduler is not None:
                level.scheduler.step()

    # ----------------------------------------------------------------------------------------
    def gradient(
        self, name: str, batches: Batches, method: MethodName | None = None
    ) -> tuple[ParamDict, torch.Tensor]:
        """The (hyper)gradient of what level `name` descends (its loss, or -loss when it
        maximises) with respect to its parameters, and its loss.

        `method` overrides every lower level's method (a check against `exact`, say)."""
        level = self.levels[name]
        closure = self._closure(name)
        methods = {lower: self.method_of(lower, method) for lower in closure}
        products = {lower: mixed_product(m) for lower, m in methods.items()}
        steps = self._unroll(closure, batches, products)
        unrolled = {lower: step.values for lower, step in steps.items()}

        own_keys = list(level.params)
        own = [level.params[k] for k in own_keys]
        reachable = self._reachable(name, closure)
        # the levels a cotangent can pass through (others: no hypergradient, no gradient asked)
        carrying = {r for r in reachable if products[r] is not None}
        leaves = {
            read: {k: t.detach().requires_grad_(True) for k, t in unrolled[read].items()}
            for read in level.reads_lower if read in carrying
        }
        with torch.enable_grad():
            seen = {r: unrolled[r] for r in level.reads_lower} | leaves
            loss = level.loss(params_view(self.levels, seen), batches)
            read_tensors = [t for read in leaves for t in leaves[read].values()]
            objective = level.objective(loss)
            grads = (torch.autograd.grad(objective, own + read_tensors, allow_unused=True)
                     if objective.requires_grad else [None] * (len(own) + len(read_tensors)))
        hyper = [torch.zeros_like(p) if g is None else g for p, g in zip(own, grads, strict=False)]
        if not leaves:  # first order, or nothing this level reads carries a hypergradient
            return dict(zip(own_keys, hyper, strict=True)), loss.detach()

        cotangents: dict[str, list[torch.Tensor]] = {}
        offset = len(own)
        for read in leaves:
            keys = list(leaves[read])
            cotangents[read] = [
                torch.zeros_like(leaves[read][k]) if g is None else g
                for k, g in zip(keys, grads[offset : offset + len(keys)], strict=True)
            ]
            offset += len(keys)

        for lower_name in reversed(closure):
            v = cotangents.pop(lower_name, None)
            product = products[lower_name]
            if v is None or product is None:
                continue
            lower = self.levels[lower_name]
            below = [r for r in lower.reads_lower if r in carrying]
            below_leaves = {
                r: {k: t.detach().requires_grad_(True) for k, t in unrolled[r].items()}
                for r in below
            }
            # reads that cannot carry the hypergradient still enter f at their unrolled values
            seen_by_lower = {r: unrolled[r] for r in lower.reads_lower} | below_leaves
            direct = self._reads_upper(lower, name)
            inputs = (own if direct else []) + [t for r in below for t in below_leaves[r].values()]
            options = dict(self.method_options.get(methods[lower_name], {}))
            if is_implicit(product):  # v on w*: -grad_u <g, H^{-1} v>, no step to pull back
                v_g, xi = v, 1.0
                options["step"] = lower.xi
            else:  # v on w' as a cotangent on the lower gradient g: -xi * grad_u <g, v_g>
                v_g, xi = steps[lower_name].pull_back(v)
            contributions = self._mixed_vjp(lower, seen_by_lower, batches, v_g, inputs, product,
                                            options)
            # foreach: one kernel per list, not one or two per tensor; the product is rounded
            # before the sum, as `h - xi * c` is (an add with alpha could fuse the two)
            offset = len(own) if direct else 0
            if offset:
                hyper = list(torch._foreach_sub(hyper, torch._foreach_mul(
                    contributions[:offset], xi)))
            for r in below:
                n = len(below_leaves[r])
                part = list(torch._foreach_mul(contributions[offset : offset + n], -xi))
                offset += n
                if r in cotangents:
                    cotangents[r] = list(torch._foreach_add(cotangents[r], part))
                else:
                    cotangents[r] = part
        return dict(zip(own_keys, hyper, strict=True)), loss.detach()

    def method_of(self, name: str, override: str | None = None) -> str:
        """The method upper levels differentiate through level `name` with: `override`, else
        the level's own `method`, else the program's."""
        return override or self.levels[name].method or self.method

    def upper_levels(self) -> list[str]:
        """Levels whose gradient has a hypergradient part: they read a lower level."""
        return [name for name, level in self.levels.items() if level.reads_lower]

    def hypergradient_gap(
        self, name: str, batches: Batches, method: str = "finite_difference"
    ) -> torch.Tensor:
        """Relative gap ||g_method - g_exact|| / ||g_exact|| of level `name` on one batch.

        Cheap to log once an epoch; on ReLU supernets the finite difference can be far off.
        """
        return self.hypergradient_agreement(name, batches, method)[1]

    def hypergradient_agreement(
        self, name: str, batches: Batches, method: str | None = None, reference: str = "exact"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cosine, relative error) of level `name`'s hypergradient by `method` (None: the
        program's per-level choice) against `reference`, on one batch, as 0-d tensors.

        (1, 0) without computing anything when every level below uses `reference` already."""
        if all(self.method_of(lower, method) == reference for lower in self._closure(name)):
            one = torch.ones((), dtype=torch.float64)
            return one, torch.zeros((), dtype=torch.float64)
        chosen, _ = self.gradient(name, batches, method=method)
        exact, _ = self.gradient(name, batches, method=reference)
        keys = list(exact)
        a = torch.cat([chosen[k].flatten().double() for k in keys])
        b = torch.cat([exact[k].flatten().double() for k in keys])
        cosine = (a @ b / (a.norm() * b.norm()).clamp_min(1e-30)).clamp(-1.0, 1.0)
        return cosine, (a - b).norm() / (b.norm() + 1e-12)

    # ----------------------------------------------------------------------------------------
    def _closure(self, name: str) -> list[str]:
        """Levels that `name` reads directly or through other reads, lowest first."""
        seen: set[str] = set()
        stack = list(self.levels[name].reads_lower)
        while stack:
            read = stack.pop()
            if read not in seen:
                seen.add(read)
                stack.extend(self.levels[read].reads_lower)
        return [n for n in self.levels if n in seen]

    @staticmethod
    def _reads_upper(level: Level, upper: str) -> bool:
        """Whether `level`'s loss reads the parameters of the upper level `upper`."""
        return level.reads_upper is None or upper in level.reads_upper

    def _reachable(self, name: str, closure: list[str]) -> set[str]:
        """Closure levels through which `name`'s parameters can influence the unrolled values:
        their loss reads `name` directly or reads a lower level that is itself reachable."""
        reachable: set[str] = set()
        for lower_name in closure:  # lowest first
            lower = self.levels[lower_name]
            if self._reads_upper(lower, name) or any(r in reachable for r in lower.reads_lower):
                reachable.add(lower_name)
        return reachable

    def _unroll(
        self, closure: list[str], batches: Batches, products: Mapping[str, MixedProduct | None]
    ) -> dict[str, UnrolledStep]:
        """w' for every level in `closure`, lowest first (the current w for a level that is
        differentiated first-order or implicitly)."""
        unrolled: dict[str, UnrolledStep] = {}
        for name in closure:
            level = self.levels[name]
            if products[name] is None or is_implicit(products[name]):
                current = {k: t.detach() for k, t in level.params.items()}
                unrolled[name] = UnrolledStep(current, [0.0] * len(current))
                continue
            replaced = {r: unrolled[r].values for r in level.reads_lower}
            keys = list(level.params)
            with torch.enable_grad():
                loss = level.loss(params_view(self.levels, replaced), batches)
                grads = torch.autograd.grad(level.objective(loss), [level.params[k] for k in keys],
                                            allow_unused=True)
            grad_dict = {
                k: torch.zeros_like(level.params[k]) if g is None else g
                for k, g in zip(keys, grads, strict=True)
            }
            if self.reuse_unroll_grad and self._stepping:
                self._unroll_cache[name] = (self.iteration, grad_dict, loss.detach())
            unrolled[name] = unrolled_step(level, grad_dict)
        return unrolled

    def _mixed_vjp(
        self,
        lower: Level,
        below: Mapping[str, ParamDict],
        batches: Batches,
        v: list[torch.Tensor],
        inputs: list[torch.Tensor],
        product: MixedProduct,
        options: Mapping[str, Any],
    ) -> list[torch.Tensor]:
        keys = list(lower.params)
        w = [lower.params[k] for k in keys]

        def loss_at(w_values: Sequence[torch.Tensor]) -> torch.Tensor:
            replaced = dict(below)
            replaced[lower.name] = dict(zip(keys, w_values, strict=True))
            return lower.objective(lower.loss(params_view(self.levels, replaced), batches))

        return product(loss_at, w, inputs, v, self.fd_radius, **options)

    @staticmethod
    def _apply(level: Level, grads: ParamDict) -> None:
        params = list(level.params.values())
        for key, param in level.params.items():
            param.grad = grads[key].detach()
        if level.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, level.grad_clip, foreach=True)
        level.optimizer.step()
        for param in params:
            param.grad = None
        if level.projection is not None:
            with torch.no_grad():
                projected = level.projection(dict(level.params))
                for key, param in level.params.items():
                    param.copy_(projected[key])
