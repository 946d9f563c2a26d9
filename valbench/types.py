"""The plugin contract, part 2: every record and protocol a plugin sees (part 1, the
hooks, is :mod:`valbench.hookspecs`). Nothing here imports torch or the harness.

Reading order: the data a plugin gets and returns (Split, Splits, Truth, Learner,
ValuationTask, Valuation); the four plugin protocols with every member the harness
reads, required and optional; the records of a run that observers and the store see
(PluginConfig, Job, Timing, JobResult).

Shapes: ``x`` is (n, ...) float32; ``y`` is (n,) int64 class indices in supervised
tasks, or a float32 copy of ``x`` in unsupervised ones. Arrays handed to plugins are
read-only: a plugin that needs to change data makes its own copy.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Callable, Literal, Mapping, Protocol, TypeVar, Union

import numpy as np

Scalar = Union[bool, int, float, str, None]  # the types a plugin parameter may have
TruthKind = Literal["mask", "noise", "none"]
Mode = Literal["supervised", "unsupervised"]
# How a learner is judged on the target set: AUROC (binary), accuracy (multi-class),
# variance-weighted R^2 (reconstruction). valbench.training.scoring computes them.
PerformanceMetric = Literal["auroc", "accuracy", "r2"]
PERFORMANCE_METRICS: tuple[str, ...] = ("auroc", "accuracy", "r2")
KINDS = ("dataset", "corruption", "valuer", "metric")


def readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (the data itself is not copied)."""
    v = a.view()
    v.flags.writeable = False
    return v


# --- Data ----------------------------------------------------------------------------

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
class Learner:
    """The paper's "learning algorithm", described without torch: an architecture, its
    widths and the recipe that trains it (defaults: the paper's ADULT/BLOG retraining,
    Adam 1e-4, batch 250, 200 epochs). :mod:`valbench.training` builds, fits and
    predicts with it (``build_model``, ``fit_model``, ``predict``), so every valuer and
    the filtering metric train the same model.

    ``architecture``: "mlp" (classifier: [Linear, Dropout, Mish, LayerNorm] per hidden
    width, then Linear; logits over ``out_features`` classes, cross-entropy),
    "mlp-autoencoder" (in -> hidden -> latent -> mirror, Mish, MSE) or
    "conv-autoencoder" (stride-2 4x4 convolutions over ``in_shape`` (C, 32, 32), MSE).
    ``class_balance``: weight each sample by n / (K n_c) of its class when fitting.
    """

    architecture: str
    in_features: int
    out_features: int
    hidden: tuple[int, ...] = (100, 100)
    dropout: float = 0.5
    norm: bool = True
    latent: int = 32
    lr: float = 1e-4
    epochs: int = 200
    batch_size: int = 250
    class_balance: bool = False
    in_shape: tuple[int, ...] = ()  # per-sample input shape; needed by conv-autoencoder

    @property
    def supervised(self) -> bool:
        return not self.architecture.endswith("autoencoder")

    def with_recipe(self, **changes: object) -> "Learner":
        return replace(self, **changes)


@dataclass(frozen=True)
class Splits:
    """What a dataset returns for one seed: source, target and test sets.

    ``n_classes`` None means no labels (y = x; unsupervised mode only). ``learner``
    None: the harness' default learner for the data's shape. ``encoder`` (optional)
    maps raw inputs to the features the learner sees; the harness applies it AFTER the
    corruption, so that e.g. feature noise goes into pixels before a pretrained network
    encodes them. ``source_annotations`` (optional): named per-source-sample side
    information the dataset knows (e.g. LINCS replicate correlation "apc"), one value
    per source sample, handed to valuers unchanged.
    """

    source: Split
    target: Split
    test: Split
    n_classes: int | None
    learner: Learner | None = None
    encoder: "Encoder | None" = None
    source_annotations: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, values in self.source_annotations.items():
            if len(values) != len(self.source):
                raise ValueError(f"source annotation '{key}' has {len(values)} values for {len(self.source)} samples")


@dataclass(frozen=True)
class Truth:
    """A corruption's ground truth, seen only by metrics.

    kind "mask": values[i] = 1 if source sample i was corrupted, else 0 (int8).
    kind "noise": values[i] = the noise rate phi_i applied to source sample i (float).
    kind "none": nothing was corrupted (values all 0); only task metrics such as
    filtering score such a cell.
    """

    kind: TruthKind
    values: np.ndarray


@dataclass(frozen=True)
class ValuationTask:
    """Everything a valuer may use. The corruption's truth is deliberately absent.

    ``learner``: the task's model and training recipe; ``metric``: how a learner is
    judged on the target set; ``seed`` fixes every random choice of the valuer (and the
    shared initialisation, ``build_model(learner, seed)``); ``device``: a torch device
    string ("cpu", "cuda"); ``source_annotations``: the dataset's per-source-sample
    side information (empty for most datasets).
    """

    source: Split
    target: Split
    n_classes: int | None
    learner: Learner
    metric: PerformanceMetric
    seed: int
    device: str = "cpu"
    source_annotations: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def supervised(self) -> bool:
        return self.n_classes is not None


@dataclass(frozen=True)
class Valuation:
    """A valuer's answer with bookkeeping: values plus how much work produced them.

    ``values``: float ndarray (n_source,), finite, higher = more valuable. ``fits``
    counts model fits (utility evaluations); ``stopped_early`` says a budget cut the
    work short; ``info`` holds small JSON-serialisable facts (e.g. the engine used).
    """

    values: np.ndarray
    fits: int | None = None
    stopped_early: bool = False
    info: Mapping[str, Any] = field(default_factory=dict)


# --- The plugin protocols ----------------------------------------------------------------
# A plugin is a class with a lowercase ``name`` and a keyword-only constructor that only
# stores its parameters (annotated bool, int, float, str, Literal or Optional of those,
# each with a default). Members with a value below are OPTIONAL: a plugin that leaves
# them out gets that value. Methods marked @optional may be left out too. Everything
# else is required. valbench.plugins and the conformance kit (valbench.testing) read
# this list; the harness reads no member that is not declared here. A plugin may declare
# its parameters as a frozen keyword-only dataclass (fields = parameters, as the built-in
# retraining valuers do); its name, version, test_params and known_failures then stay
# plain class attributes WITHOUT annotations, or they would become parameters.

F = TypeVar("F", bound=Callable[..., Any])
NO_PARAMS: Mapping[str, Scalar] = MappingProxyType({})


def optional(method: F) -> F:
    """Marks a protocol method that plugins may leave out (the harness then skips the call)."""
    method.__optional__ = True  # type: ignore[attr-defined]
    return method


class Plugin(Protocol):
    """Members every kind of plugin shares."""

    name: str
    """lowercase letters, digits, '-' or '_'; unique within its kind."""
    version: str = ""
    """goes into job keys: bump it when your results change ("": the installed distribution's
    version, or valbench's for a module loaded through VALBENCH_PLUGINS)."""
    test_params: Mapping[str, Scalar] = NO_PARAMS
    """cheap parameters the conformance kit uses instead of the defaults (benchopt's test_config)."""
    known_failures: Mapping[str, str] = NO_PARAMS
    """conformance check name -> why this plugin fails it; reported as expected, never hidden."""

    @optional
    def validate(self) -> None:
        """Range checks of the parameters, before any data is loaded; raise ValueError (or TypeError)."""


class Dataset(Plugin, Protocol):
    def load(self, seed: int) -> Splits:
        """The source/target/test sets for this seed (the same seed gives the same sets)."""
        ...

    def fingerprint(self) -> str:
        """A hash of the underlying data's content (goes into every job key)."""
        ...


class Encoder(Protocol):
    """A fixed feature map (e.g. a pretrained network) a dataset declares for its raw inputs."""

    key: str
    """names the encoder and its weights; encoded arrays are cached under it."""

    def encode(self, x: np.ndarray, device: str = "cpu") -> np.ndarray:
        """Features (n, ...) float32 for raw inputs ``x`` (n, ...); row i depends on x[i] only."""
        ...


class Corruption(Plugin, Protocol):
    truth_kind: TruthKind
    """what the truth records: "mask" (which samples), "noise" (how much) or "none"."""
    supervised_only: bool = False
    """needs labels: refused in unsupervised mode."""

    def apply(self, source: Split, n_classes: int | None, rng: np.random.Generator) -> tuple[Split, Truth]:
        """A corrupted copy of ``source`` (same length) and its truth; randomness from ``rng`` only."""
        ...


class Valuer(Plugin, Protocol):
    supervised_only: bool = False
    """needs labels: refused in unsupervised mode."""
    requires_annotations: tuple[str, ...] = ()
    """names of Splits.source_annotations it needs; a dataset without them is refused."""
    timeout: float | None = None
    """seconds a job of this valuer may run in a worker before it is stopped ('timeout');
    ``valbench run --timeout`` overrides it (None: no limit of its own)."""

    @optional
    def check(self, task: ValuationTask) -> None:
        """Data-dependent preconditions (k <= n, a budget too small), run before any work;
        raise ValueError. The harness calls it on its own instance (built from the same
        parameters) before anything is written, so value() must not rely on state it set."""

    def value(self, task: ValuationTask) -> np.ndarray | Valuation:
        """A float ndarray of one finite value per source sample, higher = more valuable."""
        ...


class Metric(Plugin, Protocol):
    truth_kind: TruthKind | None
    """the truth it scores against; None: any (it reads the task, not the truth)."""
    higher_is_better: bool
    """orientation of the score, used by tables to pick the best cell."""
    paper_table: Literal[1, 2] | None = None
    """1 or 2: the paper's table this score fills (None: none)."""
    by_default: bool = True
    """scored when a run names no metrics (False for costly ones such as filtering)."""
    uses_task: bool = False
    """True: ``score`` is also handed ``task=`` (the ValuationTask) and ``test=`` (the
    held-out test Split), for metrics that retrain the task's learner. Its time is
    recorded apart from the valuation's."""

    @optional
    def check(self, truth: Truth) -> None:
        """Raise ValueError when ``truth`` cannot be scored (e.g. no corrupted sample). The
        harness calls it once per cell before any work; without it, it calls ``score`` on
        random values to find out (loading whatever ``score`` imports, before the first job)."""

    def score(self, values: np.ndarray, truth: Truth) -> float | Mapping[str, float]:
        """How well ``values`` recover ``truth``: LOW values should mark corrupted (mask) or
        noisy (noise) samples, since a valuer ranks useful samples high. A finite float, or
        several named ones (a curve: each stored as '<metric label>:<name>')."""
        ...


PROTOCOLS: Mapping[str, type] = MappingProxyType(
    {"dataset": Dataset, "corruption": Corruption, "valuer": Valuer, "metric": Metric})


# --- Records of a run: what observers and the store see ----------------------------------

@dataclass(frozen=True)
class PluginConfig:
    """One plugin as a job uses it: every constructor parameter resolved, defaults filled in.

    ``label``: the name plus the parameters that differ from the defaults (for tables).
    """

    kind: str
    name: str
    version: str
    params: tuple[tuple[str, Scalar], ...]
    label: str
    cls: type = field(compare=False, repr=False)
    timeout: float | None = field(default=None, compare=False)
    """valuers: seconds a job may run, from the spec's ``[timeout=S]`` (not a parameter of the
    plugin, not part of the job key or the label); None: the run's ``--timeout``, else the
    valuer class's own."""

    def build(self) -> Any:
        return self.cls(**dict(self.params))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "params": dict(self.params)}


@dataclass(frozen=True)
class Job:
    """One dataset x corruption x valuer x seed cell of the grid. ``key`` hashes the
    canonical configuration (metrics are not part of it), so order never changes it."""

    dataset: PluginConfig
    corruption: PluginConfig
    valuer: PluginConfig
    metrics: tuple[PluginConfig, ...]
    seed: int
    mode: Mode
    device: str
    fingerprint: str  # the dataset's content hash
    key: str = field(init=False)

    def __post_init__(self) -> None:
        blob = json.dumps(self.config(), sort_keys=True, separators=(",", ":"), default=str)
        object.__setattr__(self, "key", hashlib.sha256(blob.encode()).hexdigest())

    def config(self) -> dict[str, Any]:
        return {
            "dataset": {**self.dataset.config(), "fingerprint": self.fingerprint},
            "corruption": self.corruption.config(),
            "valuer": self.valuer.config(),
            "seed": self.seed,
            "mode": self.mode,
            "device": self.device,
        }

    @property
    def cell(self) -> tuple:
        """Jobs of one cell share data, corruption and initialisation (they are paired)."""
        return (self.dataset.params, self.dataset.name, self.corruption.name, self.corruption.params, self.seed,
                self.mode)

    def describe(self) -> str:
        return f"{self.dataset.label} / {self.corruption.label} / {self.valuer.label} / seed {self.seed}"


@dataclass(frozen=True)
class Timing:
    """The measured call of ``value(task)``."""

    wall_s: float
    cpu_s: float
    peak_rss_bytes: int | None  # process resident high-water mark during the call
    base_rss_bytes: int | None  # resident memory just before the call
    peak_device_bytes: int | None  # CUDA allocator peak during the call
    threads: int


@dataclass(frozen=True)
class JobResult:
    """What one job produced: values and scores (status "ok"), or why not: "failed" (it
    raised, or its worker died), "timeout" or "oom" (stopped at a limit)."""

    key: str
    status: Literal["ok", "failed", "timeout", "oom"]
    values: np.ndarray | None = None
    truth: Truth | None = None
    scores: Mapping[str, float] = field(default_factory=dict)
    timing: Timing | None = None
    fits: int | None = None
    stopped_early: bool = False
    info: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None  # one line, for the terminal
    traceback: str | None = None  # the whole story, kept in the store for the plugin's author
    metric_s: float | None = None  # wall clock of scoring (filtering retrains), apart from timing
