"""Search -> derive -> retrain: train the discrete network of a genotype from scratch.

Retraining is a one-level program for the same engine (no second training loop): the network
trains on train ∪ validation, as DARTS' evaluation protocol does, and is tested on the test
split. Two recipes (`retrain_recipe` knob, `skillearn retrain --recipe`):

- `darts`: DARTS' evaluation recipe (Liu et al. 2019, `cnn/train.py`): random crop (pad 4) and
  flip, cutout 16, an auxiliary head after 2/3 of the cells weighted 0.4, drop-path 0.2 ramped
  linearly from 0 over the epochs, batch 96, SGD lr 0.025 momentum 0.9 weight decay 3e-4 with
  a per-epoch cosine schedule to 0, 600 epochs, 20 cells x 36 channels, gradient clip 5.
  Pad and cutout scale with the image side (4 and 16 at 32 px) so the recipe fits other sizes.
- `fast`: a short schedule for small inputs (the 8 px digits), where 600 epochs of a 20-cell
  network teach nothing more: batch 64, SGD lr 0.05 Nesterov with a one-cycle schedule, label
  smoothing 0.1, small random shifts, the space preset's network, 30 epochs.

`auto` picks `darts` for CIFAR-sized inputs (>= 32 px) and `fast` below. Explicit epochs,
channels and cells override the recipe's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from skillearn.data import BatchStream, DataBundle, Split
from skillearn.data.augment import crop_flip, cutout, random_shift
from skillearn.data.input_size import CIFAR_SIZED_PX, is_cifar_sized, side_px
from skillearn.mlo import Level, MultilevelProgram
from skillearn.search_spaces.darts import DiscreteNetwork, Genotype
from skillearn.trainables.evaluation import class_accuracies, worst_class


@dataclass(frozen=True)
class Recipe:
    """How a discrete network is retrained (channels/cells 0: the search space preset's)."""

    name: str
    epochs: int
    batch_size: int
    lr: float
    schedule: Literal["cosine", "one_cycle"]
    nesterov: bool
    label_smoothing: float
    flip: bool  # crop + horizontal flip; False: crop (random shift) only
    cutout_fraction: float  # side of the cutout square / image side (DARTS: 16 / 32)
    auxiliary_weight: float
    drop_path: float  # final drop-path probability, reached linearly from 0
    channels: int
    cells: int
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0

    def pad(self, px: int) -> int:
        """Crop padding: 4 at 32 px (DARTS, CIFAR), at least 1."""
        return max(1, px // 8)

    def cutout_length(self, px: int) -> int:
        return round(self.cutout_fraction * px)


RECIPES: dict[str, Recipe] = {
    "darts": Recipe("darts", epochs=600, batch_size=96, lr=0.025, schedule="cosine",
                    nesterov=False, label_smoothing=0.0, flip=True, cutout_fraction=0.5,
                    auxiliary_weight=0.4, drop_path=0.2, channels=36, cells=20),
    "fast": Recipe("fast", epochs=30, batch_size=64, lr=0.05, schedule="one_cycle",
                   nesterov=True, label_smoothing=0.1, flip=False, cutout_fraction=0.0,
                   auxiliary_weight=0.0, drop_path=0.0, channels=0, cells=0),
}


@dataclass(frozen=True)
class RetrainPlan:
    """A recipe with its final budget and network size, and why that recipe was chosen."""

    recipe: Recipe
    reason: str
    epochs: int
    channels: int
    cells: int

    def describe(self) -> str:
        r = self.recipe
        parts = [f"{self.epochs} epochs", f"{self.cells} cells x {self.channels} channels",
                 f"batch {r.batch_size}", f"SGD lr {r.lr} {r.schedule.replace('_', '-')}",
                 "crop+flip" if r.flip else "random shifts"]
        if r.cutout_fraction:
            parts.append(f"cutout {r.cutout_fraction:g} of the side (16 at 32 px)")
        if r.auxiliary_weight:
            parts.append(f"auxiliary head {r.auxiliary_weight:g}")
        if r.drop_path:
            parts.append(f"drop-path 0 -> {r.drop_path:g}")
        if r.label_smoothing:
            parts.append(f"label smoothing {r.label_smoothing:g}")
        return f"recipe {r.name} ({self.reason}): " + ", ".join(parts)


def choose_recipe(name: str, input_shape: tuple[int, ...]) -> tuple[Recipe, str]:
    """The recipe `name` stands for on inputs of `input_shape`, and why (for the output)."""
    px = side_px(input_shape)
    if name != "auto":
        return RECIPES[name], f"chosen, {px} px inputs"
    if is_cifar_sized(input_shape):
        return RECIPES["darts"], f"auto: {px} px inputs are CIFAR-sized (>= {CIFAR_SIZED_PX} px)"
    return RECIPES["fast"], (f"auto: {px} px inputs are smaller than CIFAR's {CIFAR_SIZED_PX}; "
                             "use --recipe darts for DARTS' 600-epoch recipe")


def plan_retrain(config: Mapping[str, Any], data: DataBundle, epochs: int = 0) -> RetrainPlan:
    """The run's plan: the `retrain_recipe` knob's recipe, with explicit `epochs` (> 0),
    `retrain_channels` and `retrain_cells` overriding it; a recipe without a network size
    uses the search space preset's."""
    from skillearn.trainables.setup import resolve_space

    recipe, reason = choose_recipe(config["retrain_recipe"], data.input_shape)
    _, preset = resolve_space(config, data)  # the explicit knob, else the preset's size
    return RetrainPlan(
        recipe=recipe,
        reason=reason,
        epochs=epochs or recipe.epochs,
        channels=config["retrain_channels"] or recipe.channels or preset["channels"],
        cells=config["retrain_cells"] or recipe.cells or preset["cells"],
    )


def drop_path_rate(final: float, epoch: int, epochs: int) -> float:
    """DARTS' schedule: drop-path probability `final * epoch / epochs` during epoch `epoch`."""
    return final * epoch / epochs


def augment(x: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    """The recipe's training augmentation: crop (+ flip), then cutout, as DARTS' transforms."""
    px = x.shape[-1]
    x = crop_flip(x, generator, recipe.pad(px)) if recipe.flip else random_shift(
        x, generator, recipe.pad(px))
    return cutout(x, generator, recipe.cutout_length(px))


def recipe_loss(net: DiscreteNetwork, x: torch.Tensor, y: torch.Tensor,
                recipe: Recipe) -> torch.Tensor:
    """Cross-entropy of the logits plus `auxiliary_weight` x that of the auxiliary head, whose
    logits exist in training mode only (DARTS: `loss += auxiliary_weight * loss_aux`)."""
    logits, aux_logits = net.forward_with_auxiliary(x)
    loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
    if aux_logits is not None and recipe.auxiliary_weight:
        loss = loss + recipe.auxiliary_weight * F.cross_entropy(
            aux_logits, y, label_smoothing=recipe.label_smoothing)
    return loss


def build_network(genotype: Genotype, data: DataBundle, plan: RetrainPlan) -> DiscreteNetwork:
    """The discrete network of `genotype` at the plan's size, with the recipe's auxiliary head."""
    return DiscreteNetwork(genotype, channels=plan.channels, cells=plan.cells,
                           num_classes=data.num_classes, in_channels=data.input_shape[0],
                           auxiliary=plan.recipe.auxiliary_weight > 0)


EpochHook = Callable[[dict[str, float]], None]


def train_network(
    net: DiscreteNetwork,
    pool: Split,
    device: torch.device,
    plan: RetrainPlan,
    seed: int,
    on_epoch: EpochHook | None = None,
) -> None:
    """Train `net` on `pool` with the plan's recipe; `on_epoch` receives each epoch's record
    (epoch, lr, drop_path_prob, train_loss)."""
    recipe = plan.recipe
    weights = dict(net.named_parameters())
    optimizer = torch.optim.SGD(weights.values(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    stream = BatchStream(pool, recipe.batch_size, seed=seed, device=device)
    steps = len(stream)
    if recipe.schedule == "one_cycle":
        per_step = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=plan.epochs * steps, pct_start=0.15)
        per_epoch = None
    else:  # DARTS steps its cosine once per epoch, down to 0 at the end
        per_step = None
        per_epoch = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=plan.epochs)
    generator = torch.Generator().manual_seed(seed)

    def loss(p: Any, b: Any) -> torch.Tensor:
        x, y, _ = b["train"]
        return recipe_loss(net, augment(x, recipe, generator), y, recipe)

    program = MultilevelProgram(
        [Level("weights", weights, optimizer, loss, grad_clip=recipe.grad_clip)],
        method="first_order",
    )
    batches = iter(stream)
    net.train()
    for epoch in range(plan.epochs):
        net.drop_path_prob = drop_path_rate(recipe.drop_path, epoch, plan.epochs)
        lr = optimizer.param_groups[0]["lr"]
        total = torch.zeros((), device=device)
        for _ in range(steps):
            total += program.step({"train": next(batches)})["weights"]
            if per_step is not None:
                per_step.step()
        if per_epoch is not None:
            per_epoch.step()
        if on_epoch is not None:
            on_epoch({"epoch": epoch + 1, "lr": lr, "drop_path_prob": net.drop_path_prob,
                      "train_loss": float(total) / steps})
    net.eval()


def retrain_genotype(
    genotype: Genotype,
    data: DataBundle,
    device: torch.device,
    plan: RetrainPlan,
    seed: int,
    on_epoch: EpochHook | None = None,
) -> dict[str, Any]:
    """Train `genotype`'s network on train ∪ val; returns test metrics prefixed `retrain_`."""
    return retrain_network(genotype, data, device, plan, seed, on_epoch)[1]


def retrain_network(
    genotype: Genotype,
    data: DataBundle,
    device: torch.device,
    plan: RetrainPlan,
    seed: int,
    on_epoch: EpochHook | None = None,
) -> tuple[DiscreteNetwork, dict[str, Any]]:
    """`retrain_genotype`, also returning the trained network (eval mode), whose weights
    `skillearn retrain` keeps for `skillearn export`."""
    torch.manual_seed(seed)
    net = build_network(genotype, data, plan).to(device)
    pool = Split(
        x=torch.cat([data.train.x, data.val.x]),
        y=torch.cat([data.train.y, data.val.y]),
        clean_y=torch.cat([data.train.clean_y, data.val.clean_y]),
        index=torch.cat([data.train.index, data.val.index]),
    )
    train_network(net, pool, device, plan, seed, on_epoch)
    test_acc, per_class = class_accuracies(net, data.test, data.num_classes, device)
    return net, {
        "retrain_test_acc": float(test_acc),
        "retrain_worst_class_acc": worst_class(per_class),
        "retrain_params": model_parameters(net),
    }


def model_parameters(net: DiscreteNetwork) -> int:
    """Parameters of the model as DARTS counts them: the auxiliary head is a training aid."""
    return sum(p.numel() for name, p in net.named_parameters()
               if not name.startswith("auxiliary_head."))
