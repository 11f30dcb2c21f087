"""Driver side of the artifact vocabulary: one renderer per kind turns declared artifacts into
files (and run tags) for MLflow.

A renderer is registered for a kind (`register_renderer`) and called with the artifact and a
`RenderContext`: the trial, the epoch, this trial's earlier artifacts of the same kind and name
(`history`, kept when the renderer asks for it), a staging folder whose files are uploaded to
the run (`folder(path)`), and `tags` to set on the run. `finish` runs when the trial ends (plots
over the whole history); `restore` rebuilds the history from what an earlier driver logged, so a
resumed sweep continues its plots. `ArtifactStager` applies the registry to Tune results and
hands the staged folders to the write queue; the Tune callback knows no kind.

Files of today's runs: `genotype.json`, `cell_normal.png`, `cell_reduce.png` (latest genotype;
tag `genotype`), `alphas/epoch_XXXX.json` and at the end `alpha_evolution.png` /
`alpha_evolution_reduce.png`, `weight_function.png` (a curve named so, every epoch so far),
`weight_histogram.png`, `learned_weights.png`, `per_class_acc.csv` (a table), `<name>.png`
(an image or any other curve).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillearn.artifacts import (
    ARTIFACTS_KEY,
    ArchitectureWeights,
    Artifact,
    Curve,
    GenotypeArtifact,
    Image,
    Table,
    WeightHistogram,
    WeightTrends,
    artifact_from_dict,
)

logger = logging.getLogger(__name__)

History = dict[int, Artifact]  # epoch -> artifact


@dataclass
class RenderContext:
    """What a renderer may use and produce for one artifact of one trial."""

    trial_id: str
    epoch: int
    history: History
    stage: Callable[[], Path]
    tags: dict[str, str] = field(default_factory=dict)
    folders: dict[str | None, Path] = field(default_factory=dict)

    def folder(self, path: str | None = None) -> Path:
        """A staging folder whose files are uploaded under `path` of the run (None: its root)."""
        if path not in self.folders:
            self.folders[path] = self.stage()
        return self.folders[path]


Render = Callable[[Any, RenderContext], None]
Finish = Callable[[RenderContext], None]
# (the artifact folder an earlier driver logged the history to, file JSON -> (epoch, artifact))
Restore = tuple[str, Callable[[Mapping[str, Any]], tuple[int, Artifact]]]


@dataclass(frozen=True)
class Renderer:
    render: Render
    finish: Finish | None = None
    keep_history: bool = False
    only_when_changed: bool = False  # skip an artifact equal to the last one rendered
    restore: Restore | None = None


RENDERERS: dict[str, Renderer] = {}


def register_renderer(kind: type[Artifact] | str, render: Render, *, finish: Finish | None = None,
                      keep_history: bool = False, only_when_changed: bool = False,
                      restore: Restore | None = None) -> None:
    """Make the driver render artifacts of `kind` with `render` (a later call replaces it)."""
    name = kind if isinstance(kind, str) else kind.kind
    RENDERERS[name] = Renderer(render, finish, keep_history or finish is not None
                               or restore is not None, only_when_changed, restore)


# --- the renderers of the built-in kinds -------------------------------------------------------


def render_genotype(artifact: GenotypeArtifact, ctx: RenderContext) -> None:
    from skillearn.search_spaces.darts import Genotype, draw_cell

    genotype = Genotype.from_dict(artifact.genotype)
    ctx.tags["genotype"] = genotype.to_json()  # kept even when a drawing fails
    folder = ctx.folder()
    Path(folder, "genotype.json").write_text(json.dumps(genotype.to_dict(), indent=1))
    draw_cell(genotype, "normal", Path(folder, "cell_normal.png"))
    draw_cell(genotype, "reduce", Path(folder, "cell_reduce.png"))


ALPHA_FOLDER = "alphas"
EVOLUTION_FILES = {"alpha_normal": "alpha_evolution.png",
                   "alpha_reduce": "alpha_evolution_reduce.png"}


def render_alphas(artifact: ArchitectureWeights, ctx: RenderContext) -> None:
    """`alphas/epoch_XXXX.json` per epoch (the history a resumed driver reads back; a second
    set of weights, named otherwise, goes to a folder of its name)."""
    record = {"epoch": ctx.epoch, "ops": artifact.ops, "logits": artifact.logits,
              **artifact.alphas}
    folder = ctx.folder(artifact.name)
    Path(folder, f"epoch_{ctx.epoch:04d}.json").write_text(json.dumps(record))


def _as_logits(artifact: ArchitectureWeights, cell: str) -> list[list[float]]:
    """draw_alpha_evolution softmaxes its input: probabilities are passed as their logs."""
    rows = artifact.alphas[cell]
    if artifact.logits:
        return rows
    return [[math.log(max(v, 1e-12)) for v in row] for row in rows]


def finish_alphas(ctx: RenderContext) -> None:
    """`alpha_evolution*.png`: each op's mean softmax weight over the epochs, per cell type."""
    from skillearn.search_spaces.darts import draw_alpha_evolution

    epochs = sorted(ctx.history)
    latest: ArchitectureWeights = ctx.history[epochs[-1]]  # type: ignore[assignment]
    prefix = "" if latest.name == ALPHA_FOLDER else f"{latest.name}_"
    for cell, name in EVOLUTION_FILES.items():
        series = [_as_logits(ctx.history[e], cell) for e in epochs  # type: ignore[arg-type]
                  if cell in ctx.history[e].alphas]  # type: ignore[attr-defined]
        if series:
            draw_alpha_evolution(series, latest.ops, Path(ctx.folder(), prefix + name))


def restore_alphas(record: Mapping[str, Any]) -> tuple[int, Artifact]:
    """An `alphas/epoch_XXXX.json` back as the artifact (files of older runs: logits, no ops)."""
    alphas = {k: v for k, v in record.items() if k in EVOLUTION_FILES}
    n_ops = len(next(iter(alphas.values()))[0])
    ops = list(record.get("ops") or [f"op{k}" for k in range(n_ops)])
    return int(record["epoch"]), ArchitectureWeights(alphas=alphas, ops=ops,
                                                     logits=bool(record.get("logits", True)))


def draw_curves(curves: list[tuple[int | None, Curve]], path: Path) -> None:
    """Curves in one plot, later ones darker, the first and last labelled with their epoch
    (axis labels and range are the last curve's)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shades = np.linspace(0.25, 1.0, max(len(curves), 1))
    labelled = {0, len(curves) - 1}
    for k, ((epoch, curve), shade) in enumerate(zip(curves, shades, strict=False)):
        label = f"epoch {epoch}" if epoch is not None and k in labelled else None
        ax.plot(curve.x, curve.y, color=(0.1, 0.3, 0.7, float(shade)), label=label)
    last = curves[-1][1]
    ax.set_xlabel(last.x_label)
    ax.set_ylabel(last.y_label)
    if last.y_range:
        ax.set_ylim(*last.y_range)
    if any(epoch is not None for epoch, _ in curves):
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)


def render_curve(artifact: Curve, ctx: RenderContext) -> None:
    """`<name>.png`: this epoch's curve, or with `overlay_epochs` every epoch's so far."""
    curves: list[tuple[int | None, Curve]] = [(None, artifact)]
    if artifact.overlay_epochs:
        curves = [(e, ctx.history[e]) for e in sorted(ctx.history)]  # type: ignore[misc]
    draw_curves(curves, Path(ctx.folder(), f"{artifact.name}.png"))


def render_weight_histogram(artifact: WeightHistogram, ctx: RenderContext) -> None:
    from skillearn.reweighting.plots import draw_weight_histogram

    draw_weight_histogram(artifact.weights, artifact.is_noisy,
                          Path(ctx.folder(), f"{artifact.name}.png"))


def render_weight_trends(artifact: WeightTrends, ctx: RenderContext) -> None:
    """`learned_weights.png`: mean ± std of r / a / b over the epochs this driver has seen."""
    from skillearn.reweighting.trends import draw_weight_trends

    history = {e: ctx.history[e].values for e in sorted(ctx.history)}  # type: ignore[attr-defined]
    draw_weight_trends(history, Path(ctx.folder(), f"{artifact.name}.png"))


def render_table(artifact: Table, ctx: RenderContext) -> None:
    with Path(ctx.folder(), f"{artifact.name}.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(artifact.columns)
        writer.writerows(artifact.rows)


def render_image(artifact: Image, ctx: RenderContext) -> None:
    Path(ctx.folder(), f"{artifact.name}.png").write_bytes(artifact.png())


# drawing two cells costs the driver ~0.5 s: only when the architecture changed
register_renderer(GenotypeArtifact, render_genotype, only_when_changed=True)
register_renderer(ArchitectureWeights, render_alphas, finish=finish_alphas,
                  restore=(ALPHA_FOLDER, restore_alphas))
register_renderer(Curve, render_curve, keep_history=True)
register_renderer(WeightHistogram, render_weight_histogram)
register_renderer(WeightTrends, render_weight_trends, keep_history=True)
register_renderer(Table, render_table)
register_renderer(Image, render_image)


# --- applying the registry to a trial's results ------------------------------------------------

Queue = Callable[[str, dict[str, Any]], None]  # (trial_id, write-queue op)
Key = tuple[str, str, str]  # (trial_id, kind, name)


class ArtifactStager:
    """Renders each declared artifact of a trial's results into staged folders and queues their
    upload (and tags); keeps the histories renderers ask for. Rendering problems are warnings:
    they never stop a sweep."""

    def __init__(self, stage: Callable[[], Path], queue: Queue,
                 registry: Mapping[str, Renderer] | None = None) -> None:
        self.stage, self.queue = stage, queue
        self.registry = RENDERERS if registry is None else registry
        self.histories: dict[Key, History] = {}
        self._last: dict[Key, dict[str, Any]] = {}

    def history(self, trial_id: str, kind: str, name: str) -> History:
        return self.histories.get((trial_id, kind, name), {})

    def on_result(self, trial_id: str, epoch: int, result: Mapping[str, Any]) -> None:
        for data in result.get(ARTIFACTS_KEY) or ():
            self._safely(f"a {data.get('kind')!r} artifact", self._render, trial_id, epoch, data)

    def _render(self, trial_id: str, epoch: int, data: Mapping[str, Any]) -> None:
        artifact = artifact_from_dict(data)
        renderer = self.registry.get(artifact.kind)
        if renderer is None:
            raise ValueError(f"no renderer is registered for kind {artifact.kind!r}")
        key = (trial_id, artifact.kind, artifact.name)
        if renderer.only_when_changed:
            if self._last.get(key) == data:
                return
            self._last[key] = dict(data)
        history: History = {}
        if renderer.keep_history:
            history = self.histories.setdefault(key, {})
            history[epoch] = artifact
        ctx = RenderContext(trial_id, epoch, history, self.stage)
        try:
            renderer.render(artifact, ctx)
        finally:
            self._queue_outputs(trial_id, ctx)

    def on_trial_end(self, trial_id: str) -> None:
        """The whole-history renderings (e.g. the alpha evolution) of a finished trial."""
        for (owner, kind, _name), history in list(self.histories.items()):
            renderer = self.registry.get(kind)
            if owner != trial_id or not history or renderer is None or renderer.finish is None:
                continue
            ctx = RenderContext(trial_id, max(history), history, self.stage)
            self._safely(f"the {kind} of the whole trial", self._finish, renderer.finish, ctx)

    def _finish(self, finish: Finish, ctx: RenderContext) -> None:
        try:
            finish(ctx)
        finally:
            self._queue_outputs(ctx.trial_id, ctx)

    def restore(self, trial_id: str, read_logged: Callable[[str], Iterable[Mapping[str, Any]]]
                ) -> None:
        """On resume: the histories an earlier driver logged (`read_logged(folder)` yields the
        JSON records in that folder of the trial's run)."""
        for kind, renderer in self.registry.items():
            if renderer.restore is None:
                continue
            folder, parse = renderer.restore
            try:
                for record in read_logged(folder):
                    epoch, artifact = parse(record)
                    key = (trial_id, kind, artifact.name)
                    self.histories.setdefault(key, {}).setdefault(epoch, artifact)
            except Exception as err:  # a missing folder is normal for a fresh trial
                logger.debug("no %s history for %s: %s", kind, trial_id, err)

    def _queue_outputs(self, trial_id: str, ctx: RenderContext) -> None:
        for path, folder in ctx.folders.items():
            op: dict[str, Any] = {"op": "artifacts", "dir": str(folder)}
            if path is not None:
                op["path"] = path
            self.queue(trial_id, op)
        if ctx.tags:
            self.queue(trial_id, {"op": "tags", "tags": dict(ctx.tags)})

    @staticmethod
    def _safely(what: str, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as err:
            logger.warning("skillearn: could not draw %s for MLflow: %s", what, err)
