"""What a trial produces besides numbers, declared as typed data (the artifact vocabulary).

A skill says "this epoch I produce this genotype, these architecture weights, this curve, this
table, this image" by returning instances of the dataclasses below. The runner puts them, as
plain dicts tagged with their `kind`, under ONE reserved key of the epoch's result
(`ARTIFACTS_KEY`), so they travel through Ray like any other result value; the driver turns
each kind into files with the renderer registered for it (`skillearn.platform.renderers`).
Scalar metrics stay numbers in the result; nothing here is guessed back from a key name.

A new kind is one dataclass decorated with `@artifact_kind` here (or in a skill's module) and one
renderer registered on the driver. This module is a leaf: standard library only.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

ARTIFACTS_KEY = "artifacts"

ARTIFACT_KINDS: dict[str, type[Artifact]] = {}

A = TypeVar("A", bound="Artifact")


class Artifact:
    """Base of the artifact dataclasses: a `kind` tag, a `name` unique per kind in a trial."""

    kind: ClassVar[str] = ""
    name: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, tagged with the kind (what travels in a Tune result)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {"kind": self.kind, **_plain(data)}

    @classmethod
    def from_dict(cls: type[A], data: Mapping[str, Any]) -> A:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


def _plain(value: Any) -> Any:
    """Tuples become lists and mapping keys strings: what a JSON round trip gives back."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def artifact_kind(cls: type[A]) -> type[A]:
    """Register a dataclass as an artifact kind (its `kind` must be new)."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} needs a `kind`")
    known = ARTIFACT_KINDS.get(cls.kind)
    if known is not None and known is not cls:
        raise ValueError(f"artifact kind {cls.kind!r} is already {known.__name__}")
    ARTIFACT_KINDS[cls.kind] = cls
    return cls


def artifact_from_dict(data: Mapping[str, Any]) -> Artifact:
    """The artifact a `to_dict` result describes; ValueError for a kind nobody registered."""
    kind = data.get("kind")
    cls = ARTIFACT_KINDS.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown artifact kind {kind!r}; known: {sorted(ARTIFACT_KINDS)}")
    return cls.from_dict(data)


def artifacts_payload(artifacts: Iterable[Artifact]) -> list[dict[str, Any]]:
    """The value of `result[ARTIFACTS_KEY]`."""
    return [a.to_dict() for a in artifacts]


def artifacts_of(result: Mapping[str, Any]) -> list[Artifact]:
    """The artifacts a result declares (none when it declares none)."""
    return [artifact_from_dict(d) for d in result.get(ARTIFACTS_KEY) or ()]


def find_artifact(result: Mapping[str, Any], kind: type[A], name: str | None = None) -> A | None:
    """The last artifact of `kind` (and `name`, when given) in a result, else None."""
    found = None
    for data in result.get(ARTIFACTS_KEY) or ():
        if data.get("kind") == kind.kind and (name is None or data.get("name") == name):
            found = data
    return None if found is None else kind.from_dict(found)


@dataclass
class EpochReport:
    """What a skill adds to an epoch's result: numeric metrics and declared artifacts."""

    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)

    def merge(self, other: EpochReport) -> EpochReport:
        self.metrics.update(other.metrics)
        self.artifacts.extend(other.artifacts)
        return self


# --- the kinds ---------------------------------------------------------------------------------


@artifact_kind
@dataclass(frozen=True)
class GenotypeArtifact(Artifact):
    """A discrete architecture (DARTS `Genotype.to_dict()`): drawn as cells, kept as a tag."""

    kind: ClassVar[str] = "genotype"
    genotype: dict[str, Any]
    name: str = "genotype"


@artifact_kind
@dataclass(frozen=True)
class ArchitectureWeights(Artifact):
    """Continuous architecture weights (edges x ops per cell type), with the op names of the
    columns and whether the values are logits (softmax not applied) or probabilities."""

    kind: ClassVar[str] = "architecture_weights"
    alphas: dict[str, list[list[float]]]
    ops: list[str]
    logits: bool = True
    name: str = "alphas"

    def __post_init__(self) -> None:
        for cell, rows in self.alphas.items():
            if any(len(row) != len(self.ops) for row in rows):
                raise ValueError(f"{cell}: every row needs one value per op ({len(self.ops)})")


@artifact_kind
@dataclass(frozen=True)
class Curve(Artifact):
    """A y-over-x line; `overlay_epochs` draws every epoch's curve so far in one plot."""

    kind: ClassVar[str] = "curve"
    name: str
    x: list[float]
    y: list[float]
    x_label: str = ""
    y_label: str = ""
    y_range: list[float] | None = None
    overlay_epochs: bool = False

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"curve {self.name!r}: x has {len(self.x)} points, y {len(self.y)}")


@artifact_kind
@dataclass(frozen=True)
class WeightHistogram(Artifact):
    """Example weights of a (sample of the) train split, split by clean / mislabelled."""

    kind: ClassVar[str] = "weight_histogram"
    weights: list[float]
    is_noisy: list[int]
    name: str = "weight_histogram"

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.is_noisy):
            raise ValueError("weights and is_noisy need the same length")


@artifact_kind
@dataclass(frozen=True)
class WeightTrends(Artifact):
    """One epoch's summary of learned example weights (`q_mean`, `q_std`, clean / noisy means,
    see `skillearn.reweighting.trends`): drawn over the epochs as one panel per quantity."""

    kind: ClassVar[str] = "weight_trends"
    values: dict[str, float]
    name: str = "learned_weights"


@artifact_kind
@dataclass(frozen=True)
class Table(Artifact):
    """Rows under named columns (written as CSV)."""

    kind: ClassVar[str] = "table"
    name: str
    columns: list[str]
    rows: list[list[Any]]

    def __post_init__(self) -> None:
        if any(len(row) != len(self.columns) for row in self.rows):
            raise ValueError(f"table {self.name!r}: every row needs {len(self.columns)} cells")


@artifact_kind
@dataclass(frozen=True)
class Image(Artifact):
    """A PNG, carried base64-encoded (a result must be plain data)."""

    kind: ClassVar[str] = "image"
    name: str
    png_base64: str

    @classmethod
    def from_png(cls, name: str, png: bytes) -> Image:
        return cls(name=name, png_base64=base64.b64encode(png).decode("ascii"))

    def png(self) -> bytes:
        return base64.b64decode(self.png_base64)


def rows_table(name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A Table from any row sequences (tuples, numpy scalars become lists / Python values)."""
    return Table(name=name, columns=list(columns),
                 rows=[[v.item() if hasattr(v, "item") else v for v in row] for row in rows])
