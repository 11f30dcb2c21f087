"""Search -> derive -> retrain: train the discrete network of a genotype from scratch.

Retraining is a one-level program for the same engine (no second training loop): the network
trains on train ∪ validation, as DARTS' evaluation protocol does, and is tested on the test
split. Small random shifts augment the images (DARTS uses crops and flips on CIFAR).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from skillearn.data import BatchStream, DataBundle, Split
from skillearn.data.augment import random_shift
from skillearn.mlo import Level, MultilevelProgram
from skillearn.search_spaces.darts import DiscreteNetwork, Genotype
from skillearn.trainables.evaluation import class_accuracies, worst_class


def retrain_genotype(
    genotype: Genotype,
    data: DataBundle,
    device: torch.device,
    epochs: int,
    seed: int,
    channels: int,
    cells: int,
    batch_size: int = 64,
    lr: float = 0.05,
) -> dict[str, Any]:
    """Train `genotype`'s network on train ∪ val; returns test metrics prefixed `retrain_`."""
    torch.manual_seed(seed)
    net = DiscreteNetwork(genotype, channels=channels, cells=cells,
                          num_classes=data.num_classes, in_channels=data.input_shape[0]).to(device)
    pool = Split(
        x=torch.cat([data.train.x, data.val.x]),
        y=torch.cat([data.train.y, data.val.y]),
        clean_y=torch.cat([data.train.clean_y, data.val.clean_y]),
        index=torch.cat([data.train.index, data.val.index]),
    )
    weights = dict(net.named_parameters())
    optimizer = torch.optim.SGD(weights.values(), lr=lr, momentum=0.9, weight_decay=3e-4,
                                nesterov=True)
    stream = BatchStream(pool, batch_size, seed=seed, device=device)
    steps = len(stream)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * steps, pct_start=0.15
    )
    augment = torch.Generator().manual_seed(seed)
    pad = max(1, data.input_shape[-1] // 8)

    def loss(p: Any, b: Any) -> torch.Tensor:
        x, y, _ = b["train"]
        return F.cross_entropy(net(random_shift(x, augment, pad)), y, label_smoothing=0.1)

    program = MultilevelProgram(
        [Level("weights", weights, optimizer, loss, grad_clip=5.0)], method="first_order"
    )
    batches = iter(stream)
    net.train()
    for _ in range(epochs * steps):
        program.step({"train": next(batches)})
        scheduler.step()
    net.eval()
    test_acc, per_class = class_accuracies(net, data.test, data.num_classes, device)
    return {
        "retrain_test_acc": float(test_acc),
        "retrain_worst_class_acc": worst_class(per_class),
        "retrain_params": sum(p.numel() for p in weights.values()),
    }
