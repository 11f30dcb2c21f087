"""quark0/darts ``cnn/architect.py`` in modern torch.

Only the removed APIs are rewritten (``Variable``, ``tensor.sub(eta, x)``, ``add_(R, v)``,
``.cuda()``); ``R`` is read to the host with ``.item()`` because in torch 0.3 ``norm()`` of a
tensor returned a Python float. The second-order step therefore costs, like the original, one
train forward/backward for the virtual step, one validation forward/backward through a freshly
built copy of the network, and two train forward/backward passes for the finite-difference
Hessian-vector product (plus the real weight step the search loop takes afterwards).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .model_search import Network


def _concat(xs: Iterable[Tensor]) -> Tensor:
    return torch.cat([x.view(-1) for x in xs])


@dataclass(frozen=True)
class ArchitectSettings:
    """The subset of ``train_search.py``'s args the Architect reads (DARTS defaults)."""

    momentum: float = 0.9
    weight_decay: float = 3e-4
    arch_learning_rate: float = 3e-4
    arch_weight_decay: float = 1e-3


class Architect:
    def __init__(self, model: Network, args: ArchitectSettings) -> None:
        self.network_momentum = args.momentum
        self.network_weight_decay = args.weight_decay
        self.model = model
        self.optimizer = torch.optim.Adam(
            self.model.arch_parameters(), lr=args.arch_learning_rate, betas=(0.5, 0.999),
            weight_decay=args.arch_weight_decay,
        )

    def _compute_unrolled_model(
        self, input: Tensor, target: Tensor, eta: float,
        network_optimizer: torch.optim.Optimizer,
    ) -> Network:
        loss = self.model._loss(input, target)
        theta = _concat(self.model.parameters()).data
        try:
            moment = _concat(
                network_optimizer.state[v]["momentum_buffer"] for v in self.model.parameters()
            ).mul_(self.network_momentum)
        except KeyError:  # no momentum buffers before the first weight step
            moment = torch.zeros_like(theta)
        dtheta = (
            _concat(torch.autograd.grad(loss, list(self.model.parameters()))).data
            + self.network_weight_decay * theta
        )
        unrolled_model = self._construct_model_from_theta(theta.sub(moment + dtheta, alpha=eta))
        return unrolled_model

    def step(
        self, input_train: Tensor, target_train: Tensor, input_valid: Tensor,
        target_valid: Tensor, eta: float, network_optimizer: torch.optim.Optimizer,
        unrolled: bool,
    ) -> None:
        self.optimizer.zero_grad()
        if unrolled:
            self._backward_step_unrolled(
                input_train, target_train, input_valid, target_valid, eta, network_optimizer
            )
        else:
            self._backward_step(input_valid, target_valid)
        self.optimizer.step()

    def _backward_step(self, input_valid: Tensor, target_valid: Tensor) -> None:
        loss = self.model._loss(input_valid, target_valid)
        loss.backward()

    def _backward_step_unrolled(
        self, input_train: Tensor, target_train: Tensor, input_valid: Tensor,
        target_valid: Tensor, eta: float, network_optimizer: torch.optim.Optimizer,
    ) -> None:
        unrolled_model = self._compute_unrolled_model(
            input_train, target_train, eta, network_optimizer
        )
        unrolled_loss = unrolled_model._loss(input_valid, target_valid)

        unrolled_loss.backward()
        dalpha = [v.grad for v in unrolled_model.arch_parameters()]
        vector = [v.grad.data for v in unrolled_model.parameters()]
        implicit_grads = self._hessian_vector_product(vector, input_train, target_train)

        for g, ig in zip(dalpha, implicit_grads, strict=True):
            g.data.sub_(ig.data, alpha=eta)

        for v, g in zip(self.model.arch_parameters(), dalpha, strict=True):
            if v.grad is None:
                v.grad = g.data.clone()
            else:
                v.grad.data.copy_(g.data)

    def _construct_model_from_theta(self, theta: Tensor) -> Network:
        model_new = self.model.new()
        model_dict = self.model.state_dict()

        params, offset = {}, 0
        for k, v in self.model.named_parameters():
            v_length = int(np.prod(v.size()))
            params[k] = theta[offset: offset + v_length].view(v.size())
            offset += v_length

        assert offset == len(theta)
        model_dict.update(params)
        model_new.load_state_dict(model_dict)
        return model_new

    def _hessian_vector_product(
        self, vector: list[Tensor], input: Tensor, target: Tensor, r: float = 1e-2
    ) -> list[Tensor]:
        R = r / _concat(vector).norm().item()
        for p, v in zip(self.model.parameters(), vector, strict=True):
            p.data.add_(v, alpha=R)
        loss = self.model._loss(input, target)
        grads_p = torch.autograd.grad(loss, self.model.arch_parameters())

        for p, v in zip(self.model.parameters(), vector, strict=True):
            p.data.sub_(v, alpha=2 * R)
        loss = self.model._loss(input, target)
        grads_n = torch.autograd.grad(loss, self.model.arch_parameters())

        for p, v in zip(self.model.parameters(), vector, strict=True):
            p.data.add_(v, alpha=R)

        return [(x - y).div_(2 * R) for x, y in zip(grads_p, grads_n, strict=True)]
