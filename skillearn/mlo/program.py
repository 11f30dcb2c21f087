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
The method is looked up by name in `methods.HYPERGRADIENT_METHODS`; the engine never branches
on a method's name. A level that maximises descends -loss in all three passes.

`reuse_unroll_grad=True` (opt-in) lets a lower level's real step reuse the gradient its upper
level computed for the unroll in the same iteration, saving a forward/backward per level. The
gradient was taken before the upper level moved, so with `top_down` order this changes DARTS'
update order (the lower step sees the old architecture); it is off by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from skillearn.mlo.hypergrad import global_norm
from skillearn.mlo.level import Batches, Level, ParamDict, params_view
from skillearn.mlo.methods import METHODS, MethodName, mixed_product
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
    """

    def __init__(
        self,
        levels: Sequence[Level],
        method: MethodName = "finite_difference",
        order: str | Sequence[str] = "bottom_up",
        fd_radius: float = 0.01,
        reuse_unroll_grad: bool = False,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown hypergradient method {method!r}; use one of {METHODS}")
        self.levels: dict[str, Level] = {}
        for level in levels:
            if level.name in self.levels:
                raise ValueError(f"two levels are named {level.name!r}")
            for read in level.reads:
                if read not in self.levels:
                    raise ValueError(
                        f"level {level.name!r} reads {read!r}, which is not a lower level; "
                        "list levels lowest first"
                    )
            self.levels[level.name] = level
        for level in self.levels.values():
            if any(level.name in other.reads for other in self.levels.values()):
                check_unrollable(level)
        self.method = method
        self.order = order
        self.sequence = update_order(order, list(self.levels))  # level names, stepping order
        self.fd_radius = fd_radius
        self.reuse_unroll_grad = reuse_unroll_grad
        self.iteration = 0
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
        self.iteration += 1
        self._unroll_cache.clear()
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
        maximises) with respect to its parameters, and its loss."""
        product = mixed_product(method or self.method)
        level = self.levels[name]
        closure = self._closure(name)
        steps = self._unroll(closure, batches, first_order=product is None)
        unrolled = {lower: step.values for lower, step in steps.items()}

        own_keys = list(level.params)
        own = [level.params[k] for k in own_keys]
        leaves = {
            read: {k: t.detach().requires_grad_(True) for k, t in unrolled[read].items()}
            for read in level.reads
        }
        with torch.enable_grad():
            loss = level.loss(params_view(self.levels, leaves), batches)
            read_tensors = [t for read in level.reads for t in leaves[read].values()]
            grads = torch.autograd.grad(level.objective(loss), own + read_tensors,
                                        allow_unused=True)
        hyper = [torch.zeros_like(p) if g is None else g for p, g in zip(own, grads, strict=False)]
        if product is None or not closure:
            return dict(zip(own_keys, hyper, strict=True)), loss.detach()

        cotangents: dict[str, list[torch.Tensor]] = {}
        offset = len(own)
        for read in level.reads:
            keys = list(leaves[read])
            cotangents[read] = [
                torch.zeros_like(leaves[read][k]) if g is None else g
                for k, g in zip(keys, grads[offset : offset + len(keys)], strict=True)
            ]
            offset += len(keys)

        reachable = self._reachable(name, closure)
        for lower_name in reversed(closure):
            v = cotangents.pop(lower_name, None)
            if v is None or lower_name not in reachable:
                continue
            lower = self.levels[lower_name]
            below = [r for r in lower.reads if r in reachable]
            below_leaves = {
                r: {k: t.detach().requires_grad_(True) for k, t in unrolled[r].items()}
                for r in below
            }
            # reads that cannot carry the hypergradient still enter f at their unrolled values
            seen_by_lower = {r: unrolled[r] for r in lower.reads} | below_leaves
            direct = self._depends(lower, name)
            inputs = (own if direct else []) + [t for r in below for t in below_leaves[r].values()]
            # v on w' as a cotangent on the lower gradient g: -xi * grad_u <g, v_g>
            v_g, xi = steps[lower_name].pull_back(v)
            contributions = self._mixed_vjp(lower, seen_by_lower, batches, v_g, inputs, product)
            offset = len(own) if direct else 0
            for i in range(offset):
                hyper[i] = hyper[i] - xi * contributions[i]
            for r in below:
                n = len(below_leaves[r])
                part = [-xi * c for c in contributions[offset : offset + n]]
                offset += n
                if r in cotangents:
                    cotangents[r] = [a + b for a, b in zip(cotangents[r], part, strict=True)]
                else:
                    cotangents[r] = part
        return dict(zip(own_keys, hyper, strict=True)), loss.detach()

    def hypergradient_gap(self, name: str, batches: Batches) -> torch.Tensor:
        """Relative gap ||g_fd - g_exact|| / ||g_exact|| of level `name` on one batch.

        Cheap to log once an epoch; on ReLU supernets the finite difference can be far off.
        """
        fd, _ = self.gradient(name, batches, method="finite_difference")
        exact, _ = self.gradient(name, batches, method="exact")
        diff = [fd[k] - exact[k] for k in exact]
        return global_norm(diff) / (global_norm(list(exact.values())) + 1e-12)

    # ----------------------------------------------------------------------------------------
    def _closure(self, name: str) -> list[str]:
        """Levels that `name` reads directly or through other reads, lowest first."""
        seen: set[str] = set()
        stack = list(self.levels[name].reads)
        while stack:
            read = stack.pop()
            if read not in seen:
                seen.add(read)
                stack.extend(self.levels[read].reads)
        return [n for n in self.levels if n in seen]

    @staticmethod
    def _depends(level: Level, upper: str) -> bool:
        return level.depends_on is None or upper in level.depends_on

    def _reachable(self, name: str, closure: list[str]) -> set[str]:
        """Closure levels through which `name`'s parameters can influence the unrolled values:
        their loss reads `name` directly or reads a lower level that is itself reachable."""
        reachable: set[str] = set()
        for lower_name in closure:  # lowest first
            lower = self.levels[lower_name]
            if self._depends(lower, name) or any(r in reachable for r in lower.reads):
                reachable.add(lower_name)
        return reachable

    def _unroll(
        self, closure: list[str], batches: Batches, first_order: bool
    ) -> dict[str, UnrolledStep]:
        """w' for every level in `closure`, lowest first (the current w when first order)."""
        unrolled: dict[str, UnrolledStep] = {}
        for name in closure:
            level = self.levels[name]
            if first_order:
                current = {k: t.detach() for k, t in level.params.items()}
                unrolled[name] = UnrolledStep(current, [0.0] * len(current))
                continue
            replaced = {r: unrolled[r].values for r in level.reads}
            keys = list(level.params)
            with torch.enable_grad():
                loss = level.loss(params_view(self.levels, replaced), batches)
                grads = torch.autograd.grad(level.objective(loss), [level.params[k] for k in keys],
                                            allow_unused=True)
            grad_dict = {
                k: torch.zeros_like(level.params[k]) if g is None else g
                for k, g in zip(keys, grads, strict=True)
            }
            if self.reuse_unroll_grad:
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
    ) -> list[torch.Tensor]:
        keys = list(lower.params)
        w = [lower.params[k] for k in keys]

        def loss_at(w_values: Sequence[torch.Tensor]) -> torch.Tensor:
            replaced = dict(below)
            replaced[lower.name] = dict(zip(keys, w_values, strict=True))
            return lower.objective(lower.loss(params_view(self.levels, replaced), batches))

        return product(loss_at, w, inputs, v, self.fd_radius)

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
