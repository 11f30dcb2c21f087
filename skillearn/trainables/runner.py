"""The common trial loop: data, device, seeds, epochs of engine steps, metrics, checkpoints.

`run_skill` is a plain function of a config and a `report` callback, so the same code runs in
a Python loop, in a test, or as a Ray Tune trial (the platform passes `tune.report`).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch

from skillearn.artifacts import ARTIFACTS_KEY, EpochReport, artifacts_payload, rows_table
from skillearn.data import BatchStream, DataBundle, data_spec, load_data
from skillearn.data.augment import training_augmentation
from skillearn.mlo.timing import process_peak_mb
from skillearn.trainables.architecture import architecture_report
from skillearn.trainables.backbones import BackboneRun
from skillearn.trainables.checkpoint import load_checkpoint, save_checkpoint
from skillearn.trainables.evaluation import class_accuracies, worst_class
from skillearn.trainables.fairness import fairness_metrics
from skillearn.trainables.hypergrad_check import hypergrad_check
from skillearn.trainables.registry import get_skill, resolve_config
from skillearn.trainables.retraining import plan_retrain, retrain_genotype
from skillearn.trainables.setup import Built, Setup, pick_device, resolve_space

Reporter = Callable[[dict[str, Any], str | None], None]


class NonFiniteError(FloatingPointError):
    """A loss or hypergradient became NaN/inf: the trial stops with this reason."""


def seed_everything(seed: int) -> None:
    """Seed torch's global generators (data order uses private generators)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory on CUDA, else this process's peak resident set size (over the per-level
    measurements too, which reset the counters)."""
    return process_peak_mb(device)


def run_skill(
    skill_name: str,
    config: Mapping[str, Any],
    report: Reporter,
    resume_from: str | None = None,
) -> dict[str, Any]:
    """Run one trial of `skill_name` with `config`; returns the last reported metrics."""
    skill = get_skill(skill_name)
    cfg = resolve_config(skill, {k: v for k, v in config.items() if not k.startswith("_")})
    device = pick_device(cfg["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    seed_everything(cfg["seed"])
    data = load_data(data_spec(cfg))
    space, _ = resolve_space(cfg, data)
    backbone = BackboneRun(skill, Setup(config=cfg, data=data, device=device, space=space),
                           resume_from)
    built: Built = backbone.built

    progress: dict[str, Any] = {"epoch": 0, "search_time_s": 0.0, "alpha_history": []}
    if resume_from:
        progress = load_checkpoint(resume_from, built)

    batch = cfg["batch_size"]
    train_stream = BatchStream(data.train, batch, seed=cfg["seed"], device=device)
    steps = cfg["steps_per_epoch"] or train_stream.steps_per_epoch
    metrics: dict[str, Any] = {}
    for epoch in range(progress["epoch"], cfg["epochs"]):
        streams = _epoch_streams(data, cfg, epoch, device)
        started = time.perf_counter()
        train_loss = _search_epoch(built, streams, steps, device, cfg["amp"])
        seconds = time.perf_counter() - started
        progress["search_time_s"] += seconds
        progress["epoch"] = epoch + 1
        metrics = _epoch_metrics(built, data, device, cfg, progress, train_loss)
        metrics["ms_per_step"] = 1000.0 * seconds / steps
        metrics.update(hypergrad_check(built.program, cfg, epoch, partial(_next_batches, streams)))
        last = epoch + 1 == cfg["epochs"] or backbone.stopped  # DARTS+ may end the search
        if last and cfg["retrain_epochs"] and built.architecture:
            plan = plan_retrain(cfg, data, epochs=cfg["retrain_epochs"])
            genotype = built.architecture.genotype()
            metrics.update(retrain_genotype(genotype, data, device, plan, cfg["seed"]))
        with tempfile.TemporaryDirectory(prefix="skillearn-ckpt-") as directory:
            save_checkpoint(directory, built, progress)
            report(metrics, directory)
        if backbone.stopped:
            break
    return metrics


def _epoch_streams(
    data: DataBundle, cfg: Mapping[str, Any], epoch: int, device: torch.device
) -> dict[str, Any]:
    """Batch iterators for one epoch, seeded by (seed, epoch) so a resumed trial sees the same
    batches it would have seen without the interruption.

    Every split the engine steps on is augmented when `augment` is on, as the papers' code
    applies its training transform to the train, validation (DARTS) and meta (MW-Net) loaders.
    """
    seed = cfg["seed"] * 100_003 + epoch
    augment = training_augmentation(cfg["augment"], data.input_shape)
    splits = {"train": data.train, "val": data.val}
    if data.meta is not None:
        splits["meta"] = data.meta
    return {
        name: iter(BatchStream(split, cfg["batch_size"], seed=seed + i, device=device,
                               augment=augment))
        for i, (name, split) in enumerate(splits.items())
    }


def _next_batches(streams: Mapping[str, Any]) -> dict[str, Any]:
    return {name: next(stream) for name, stream in streams.items()}


def _search_epoch(
    built: Built, streams: Mapping[str, Any], steps: int, device: torch.device, amp: str = "off"
) -> float:
    """`steps` engine steps; losses are summed on the device and read once at the end.

    `amp="bf16"` runs the steps under bfloat16 autocast (parameters and optimizer state stay
    float32); finite differences lose precision in bf16, so pair it with `method=exact`.
    """
    for module in built.modules:
        module.train()
    lowest = next(iter(built.program.levels))
    total = torch.zeros((), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16")
    for _ in range(steps):
        with autocast:
            losses = built.program.step(_next_batches(streams))
        if lowest in losses:
            total = total + losses[lowest].float()
    built.program.end_epoch()
    mean = float(total) / steps
    if not math.isfinite(mean):
        raise NonFiniteError(f"training loss became {mean} (non-finite); lower the learning "
                             "rates or use a more stable hypergradient method")
    return mean


def _epoch_metrics(
    built: Built,
    data: DataBundle,
    device: torch.device,
    cfg: Mapping[str, Any],
    progress: dict[str, Any],
    train_loss: float,
) -> dict[str, Any]:
    """The epoch's result: numeric metrics, and the declared artifacts under ARTIFACTS_KEY."""
    for module in built.modules:
        module.eval()
    val_acc, _ = class_accuracies(built.predict, data.val, data.num_classes, device)
    test_acc, per_class = class_accuracies(built.predict, data.test, data.num_classes, device)
    report = EpochReport(
        metrics={
            "epoch": progress["epoch"],
            "train_loss": train_loss,
            "val_acc": float(val_acc),
            "test_acc": float(test_acc),
            "worst_class_acc": worst_class(per_class),
            "params": built.param_count,
            "search_time_s": progress["search_time_s"],
            "peak_mem_mb": peak_memory_mb(device),
        },
        artifacts=[rows_table("per_class_acc", ("class", "test_acc"),
                              ((k, round(float(a), 4)) for k, a in enumerate(per_class)))],
    )
    if built.architecture is not None:
        report.merge(architecture_report(built.architecture))
    if built.epoch_report is not None:
        report.merge(built.epoch_report())
    metrics: dict[str, Any] = dict(report.metrics)
    metrics.update(fairness_metrics(built.predict, data, device))  # {} without an attribute
    for key in ("train_loss", "val_acc"):
        if not math.isfinite(metrics[key]):
            raise NonFiniteError(f"{key} is {metrics[key]}")
    metrics[ARTIFACTS_KEY] = artifacts_payload(report.artifacts)
    return metrics
