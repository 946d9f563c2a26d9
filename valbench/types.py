"""Data passed between the stages of a job, and the four plugin protocols.

Shapes: ``x`` is (n, ...) float32, ``y`` is (n,) int64 class indices for supervised
tasks, or a float32 copy of ``x`` for unsupervised ones. Arrays handed to plugins are
read-only: a plugin that needs to change data makes its own copy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Mapping, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from valbench.models import Learner

TruthKind = Literal["mask", "noise"]
Mode = Literal["supervised", "unsupervised"]


def readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (the data itself is not copied)."""
    v = a.view()
    v.flags.writeable = False
    return v


@dataclass(frozen=True)
class Split:
    """One set of samples: features ``x`` and labels or reconstruction targets ``y``."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

    def frozen(self) -> "Split":
        return Split(readonly(self.x), readonly(self.y))

    def take(self, index: np.ndarray) -> "Split":
        return Split(self.x[index], self.y[index])


@dataclass(frozen=True)
class Splits:
    """What a dataset plugin returns for one seed: source, target and test sets.

    ``encoder`` (optional) maps raw inputs to the features the learner sees; the harness
    applies it after the corruption, so that e.g. feature noise is added to pixels before
    a pretrained network encodes them. ``source_annotations`` (optional) are named
    per-source-sample side information a dataset knows (e.g. LINCS replicate
    correlation "apc"), one value per source sample, handed to valuers unchanged.
    """

    source: Split
    target: Split
    test: Split
    n_classes: int | None
    learner: "Learner | None" = None  # None: the harness' default learner for the shape
    encoder: "Encoder | None" = None  # applied by the harness to all three sets AFTER corruption
    source_annotations: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, values in self.source_annotations.items():
            if len(values) != len(self.source):
                raise ValueError(f"source annotation '{key}' has {len(values)} values for {len(self.source)} samples")


@dataclass(frozen=True)
class Truth:
    """A corruption's ground truth, seen only by metrics.

    kind "mask": values[i] = 1 if source sample i was corrupted, else 0.
    kind "noise": values[i] = the noise rate phi_i applied to source sample i.
    """

    kind: TruthKind
    values: np.ndarray


@dataclass(frozen=True)
class ValuationTask:
    """Everything a valuer may use. The corruption's truth is deliberately absent.

    ``learner`` is the task's model factory and training recipe; ``metric`` is the
    performance metric a learner is judged by on the target set ("auroc", "accuracy"
    or "r2"); ``seed`` fixes every random choice of the valuer; ``device`` is a torch
    device string ("cpu", "cuda").
    """

    source: Split
    target: Split
    n_classes: int | None
    learner: "Learner"
    metric: str
    seed: int
    device: str = "cpu"
    source_annotations: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def supervised(self) -> bool:
        return self.n_classes is not None


@dataclass(frozen=True)
class Valuation:
    """A valuer's answer with bookkeeping: values plus how much work produced them.

    ``fits`` counts model fits (utility evaluations); ``stopped_early`` says a budget
    cut the work short; ``info`` holds small JSON-serialisable facts (e.g. the engine).
    """

    values: np.ndarray
    fits: int | None = None
    stopped_early: bool = False
    info: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Dataset(Protocol):
    name: str

    def load(self, seed: int) -> Splits:
        """The source/target/test sets for this seed (the same seed gives the same sets)."""

    def fingerprint(self) -> str:
        """A hash of the underlying data's content (goes into every job key)."""


@runtime_checkable
class Encoder(Protocol):
    """A fixed feature map (e.g. a pretrained network) a dataset declares for its raw inputs."""

    key: str  # names the encoder and its weights; encoded arrays are cached under it

    def encode(self, x: np.ndarray, device: str = "cpu") -> np.ndarray:
        """Features (n, ...) float32 for raw inputs ``x`` (n, ...); row i depends on x[i] only."""


@runtime_checkable
class Corruption(Protocol):
    name: str
    truth_kind: TruthKind

    def apply(self, source: Split, n_classes: int | None, rng: np.random.Generator) -> tuple[Split, Truth]:
        """A corrupted copy of ``source`` and the truth of what was done to it."""


@runtime_checkable
class Valuer(Protocol):
    name: str

    def value(self, task: ValuationTask) -> "np.ndarray | Valuation":
        """One finite float per source sample; higher means more valuable."""


@runtime_checkable
class Metric(Protocol):
    name: str
    truth_kind: TruthKind
    higher_is_better: bool

    def score(self, values: np.ndarray, truth: Truth) -> float:
        """How well ``values`` recover ``truth``."""
