"""What the benchmarks run: the input sizes, synthetic data, and one step function per method.

Every step function owns its model, optimizers and batch, built from the same seed, so the
methods can be timed interleaved in one process or measured alone in a fresh one. The
skillearn methods are built through the skill registry (`get_skill(name).build(Setup(...))`
with a resolved config), so the benchmark times exactly the program a trial steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.naive import Architect, ArchitectSettings, Network
from benchmarks.naive.train_search import network_optimizer, search_step, weight_step
from skillearn.data import DataBundle, Split
from skillearn.mlo import HYPERGRADIENT_METHODS
from skillearn.search_spaces.darts import PRESETS, PRIMITIVES, SpaceConfig, SuperNet
from skillearn.trainables import get_skill, resolve_config
from skillearn.trainables.backbone_knobs import BACKBONES
from skillearn.trainables.backbones import BackboneRun
from skillearn.trainables.setup import Setup, use_fused_cells

StepFn = Callable[[], Any]

PLAIN = "skillearn/plain"
# the plain step with the cell layout `fused_cells=auto` does not pick for this size
PLAIN_EDGEWISE = "skillearn/plain_edgewise"
PLAIN_FUSED = "skillearn/plain_fused"
NAIVE_PLAIN = "naive/plain"
NAIVE_FIRST_ORDER = "naive/first_order"
NAIVE_SECOND_ORDER = "naive/second_order"
NAIVE_LABELS = (NAIVE_PLAIN, NAIVE_FIRST_ORDER, NAIVE_SECOND_ORDER)
SKILLS = ("darts", "lfm", "lpt", "il", "fair")
METHODS = tuple(HYPERGRADIENT_METHODS)  # the engine's registry


@dataclass(frozen=True)
class Variant:
    """One measured configuration: input shape, batch size and search space."""

    name: str
    size: str
    input_shape: tuple[int, int, int]
    batch: int
    space: SpaceConfig

    def describe(self) -> dict[str, Any]:
        space = self.space
        return {
            "variant": self.name, "size": self.size, "input_shape": list(self.input_shape),
            "batch": self.batch, "ops": list(space.ops), "nodes": space.nodes,
            "cells": space.cells, "channels": space.channels,
            "num_classes": space.num_classes,
        }


def _digits_space(preset: str) -> SpaceConfig:
    if preset == "reduced":
        reduced = PRESETS["reduced"]
        return SpaceConfig(ops=reduced["ops"], nodes=reduced["nodes"], cells=reduced["cells"],
                           channels=reduced["channels"], in_channels=1, num_classes=10)
    return SpaceConfig(ops=PRIMITIVES, nodes=4, cells=3, channels=8, in_channels=1,
                       num_classes=10)


_CIFAR_SPACE = SpaceConfig(ops=PRIMITIVES, nodes=4, cells=8, channels=16, in_channels=3,
                           num_classes=10)

_TINY_SPACE = SpaceConfig(ops=("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"), nodes=1,
                          cells=3, channels=4, in_channels=1, num_classes=10)

SIZES: dict[str, tuple[Variant, ...]] = {
    # `tiny` is a seconds-scale smoke configuration for the tests, not a measurement
    "tiny": (Variant("tiny", "tiny", (1, 8, 8), 8, _TINY_SPACE),),
    "digits": (
        Variant("digits/reduced", "digits", (1, 8, 8), 64, _digits_space("reduced")),
        Variant("digits/full8", "digits", (1, 8, 8), 64, _digits_space("full")),
    ),
    "cifar64": (Variant("cifar64", "cifar64", (3, 32, 32), 64, _CIFAR_SPACE),),
    "cifar256": (Variant("cifar256", "cifar256", (3, 32, 32), 256, _CIFAR_SPACE),),
}
VARIANTS: dict[str, Variant] = {v.name: v for group in SIZES.values() for v in group}


# --------------------------------------------------------------------------------------------
# data
def _split(x: torch.Tensor, y: torch.Tensor, first_index: int) -> Split:
    index = torch.arange(first_index, first_index + len(y))
    return Split(x=x, y=y, clean_y=y.clone(), index=index)


def synthetic_bundle(variant: Variant, seed: int = 0) -> DataBundle:
    """Random tensors shaped like the dataset (one batch per split): timing does not depend on
    pixel values, and building them needs no files or torchvision."""
    gen = torch.Generator().manual_seed(seed)
    n, classes = variant.batch, variant.space.num_classes

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn((n, *variant.input_shape), generator=gen)
        return x, torch.randint(0, classes, (n,), generator=gen)

    train, val = _split(*draw(), 0), _split(*draw(), n)
    return DataBundle(
        name=f"synthetic-{variant.name}", train=train, val=val, test=val, meta=None,
        num_classes=classes, input_shape=variant.input_shape,
        classes=[str(c) for c in range(classes)], record={"synthetic": True},
    )


def engine_batches(data: DataBundle, device: torch.device) -> dict[str, tuple]:
    """The whole train and val splits as one batch each, in the (x, y, index) form of
    `BatchStream`."""
    return {
        name: tuple(t.to(device) for t in (split.x, split.y, split.index))
        for name, split in (("train", data.train), ("val", data.val))
    }


# --------------------------------------------------------------------------------------------
# step functions
def torchvision_available() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def skill_config(skill: str, method: str, device: torch.device, variant: Variant,
                 seed: int = 0, order: str | None = None, backbone: str = "darts"
                 ) -> dict[str, Any]:
    """The resolved trial config the benchmark builds `skill` from (registry defaults; the
    batch is the size's own for every backbone, so the rows compare like with like)."""
    overrides: dict[str, Any] = {"method": method, "device": device.type,
                                 "batch_size": variant.batch, "seed": seed}
    if backbone != "darts":
        overrides["backbone"] = backbone
    if order is not None:
        overrides["order"] = order
    if skill in ("lfm", "fair") and not torchvision_available() and variant.input_shape[-1] > 16:
        overrides["encoder"] = "small"  # the ResNet encoder needs torchvision
    return resolve_config(get_skill(skill), overrides)


def build_skill_step(skill: str, method: str, variant: Variant, device: torch.device,
                     seed: int = 0, order: str | None = None, backbone: str = "darts",
                     stage: int = 0) -> StepFn:
    """One `program.step(batches)` of the skill exactly as a trial builds it, on `backbone`
    (P-DARTS in its `stage`: the deeper supernet with the pruned op sets)."""
    data = synthetic_bundle(variant, seed)
    config = skill_config(skill, method, device, variant, seed, order, backbone)
    torch.manual_seed(seed)
    run = BackboneRun(get_skill(skill), Setup(config=config, data=data, device=device,
                                              space=variant.space))
    for _ in range(stage):
        run.advance_stage()
    built = run.built
    built.program.paused = set()  # time the full step, whatever the warm-up schedule says
    built.program.timer = None  # and without the per-level clock
    for module in built.modules:
        module.train()
    batches = engine_batches(data, device)
    return lambda: built.program.step(batches)


def other_cells_label(variant: Variant) -> str:
    """The plain-step label of the cell layout trials do *not* use at this size."""
    return PLAIN_EDGEWISE if use_fused_cells("auto", variant.input_shape) else PLAIN_FUSED


def build_plain_step(variant: Variant, device: torch.device, seed: int = 0,
                     fused: bool | None = None, compiled: bool = False) -> StepFn:
    """A plain training step of the supernet's weights (architecture frozen): forward,
    backward, clip, SGD with DARTS' settings. The denominator of every skillearn step ratio.
    `compiled` wraps the forward in `torch.compile` (`benchmarks.compile_probe`)."""
    data = synthetic_bundle(variant, seed)
    torch.manual_seed(seed)
    if fused is None:  # as trials build it (`fused_cells=auto`)
        fused = use_fused_cells("auto", variant.input_shape)
    net = SuperNet(variant.space, fused=fused).to(device).train()
    net.use_channels_last()  # as trials build it (`channels_last=auto`)
    for alpha in net.arch_parameters().values():
        alpha.requires_grad_(False)
    weights = list(net.weight_parameters().values())
    optimizer = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
    x, y = data.train.x.to(device), data.train.y.to(device)
    forward = torch.compile(net) if compiled else net

    def step() -> torch.Tensor:
        loss = F.cross_entropy(forward(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(weights, 5.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def naive_network(variant: Variant, device: torch.device) -> Network:
    """The original DARTS search network for the variant's space."""
    space = variant.space
    return Network(space.channels, space.num_classes, space.cells, nn.CrossEntropyLoss(),
                   steps=space.nodes, stem_multiplier=space.stem_multiplier,
                   primitives=space.ops, in_channels=space.in_channels, device=device)


def build_naive_step(label: str, variant: Variant, device: torch.device, seed: int = 0) -> StepFn:
    """One iteration of the original DARTS search loop: plain, first or second order."""
    data = synthetic_bundle(variant, seed)
    torch.manual_seed(seed)
    model = naive_network(variant, device).train()
    optimizer = network_optimizer(model)
    architect = Architect(model, ArchitectSettings())
    train = (data.train.x.to(device), data.train.y.to(device))
    valid = (data.val.x.to(device), data.val.y.to(device))
    if label == NAIVE_PLAIN:
        return lambda: weight_step(model, optimizer, *train)
    unrolled = label == NAIVE_SECOND_ORDER
    return lambda: search_step(model, architect, optimizer, train, valid, unrolled=unrolled)


def build_step(label: str, variant: Variant, device: torch.device, seed: int = 0,
               order: str | None = None) -> StepFn:
    """The step function for a label: `skillearn/plain`, `naive/<kind>` or `<skill>/<method>`."""
    if label in (PLAIN, PLAIN_EDGEWISE, PLAIN_FUSED):
        fused = {PLAIN: None, PLAIN_EDGEWISE: False, PLAIN_FUSED: True}[label]
        return build_plain_step(variant, device, seed, fused=fused)
    if label in NAIVE_LABELS:
        return build_naive_step(label, variant, device, seed)
    skill, _, method = label.partition("/")
    skill, _, on = skill.partition("@")  # `darts@pc_darts/...`, `darts@p_darts.s2/...`
    backbone, _, stage = on.partition(".s")
    if (skill not in SKILLS or method not in METHODS
            or (backbone or "darts") not in BACKBONES or (stage and not stage.isdigit())):
        raise ValueError(f"unknown benchmark label {label!r}")
    return build_skill_step(skill, method, variant, device, seed, order, backbone or "darts",
                            int(stage or 0))


def backbone_labels(backbones: tuple[str, ...], methods: tuple[str, ...]) -> list[str]:
    """`darts@<backbone>/<method>` rows; P-DARTS twice, its first and its last stage."""
    labels = []
    for backbone in backbones:
        tags = [f"{backbone}.s0", f"{backbone}.s2"] if backbone == "p_darts" else [backbone]
        offered = get_skill("darts").methods
        labels += [f"darts@{tag}/{method}" for tag in tags for method in methods
                   if method in offered]
    return labels


def skill_labels(skills: tuple[str, ...], methods: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """`<skill>/<method>` labels to run, and a note for each combination a skill does not offer."""
    labels, notes = [], []
    for skill in skills:
        offered = get_skill(skill).methods
        for method in methods:
            if method in offered:
                labels.append(f"{skill}/{method}")
            else:
                notes.append(f"{skill}/{method} skipped: the {skill} skill does not offer "
                              f"{method} (it offers {', '.join(offered)})")
    return labels, notes
