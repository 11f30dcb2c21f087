"""One iteration of quark0/darts ``cnn/train_search.py``'s ``train()`` loop body.

The architecture step comes first (``architect.step``), then the real weight step on the same
training batch with gradient clipping: DARTS' top-down order.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .architect import Architect
from .model_search import Network

GRAD_CLIP = 5.0


def weight_step(
    model: Network, optimizer: torch.optim.Optimizer, input: Tensor, target: Tensor
) -> Tensor:
    """The plain training step of the search loop (it also fills the alphas' .grad, as the
    original does, since they require grad)."""
    optimizer.zero_grad()
    logits = model(input)
    loss = model._criterion(logits, target)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    return loss.detach()


def search_step(
    model: Network,
    architect: Architect,
    optimizer: torch.optim.Optimizer,
    train_batch: tuple[Tensor, Tensor],
    valid_batch: tuple[Tensor, Tensor],
    unrolled: bool,
) -> Tensor:
    """architect.step (first or second order) followed by the weight step."""
    input, target = train_batch
    input_search, target_search = valid_batch
    lr = optimizer.param_groups[0]["lr"]
    architect.step(input, target, input_search, target_search, lr, optimizer, unrolled=unrolled)
    return weight_step(model, optimizer, input, target)


def network_optimizer(model: Network, lr: float = 0.025, momentum: float = 0.9,
                      weight_decay: float = 3e-4) -> torch.optim.SGD:
    """``train_search.py``'s SGD over the weights (alphas are not in ``parameters()``)."""
    return torch.optim.SGD(model.parameters(), lr, momentum=momentum, weight_decay=weight_decay)
