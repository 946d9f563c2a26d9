"""The DVGS engine: per-sample gradient similarities (reusable by other gradient-based valuers).

- :mod:`~valbench.gradsim.engines`: the naive loop and the Opacus materialising engine,
  model checks, parameter selection;
- :mod:`~valbench.gradsim.fast`: the exact fast engine (no per-sample gradients);
- :mod:`~valbench.gradsim.sequential`: hand-written forward/backward passes for plain
  layer chains (the fast engine's quicker path; also the flat MLP trainer's passes);
- :mod:`~valbench.gradsim.layers` / :mod:`~valbench.training.adam`: Mish in closed form,
  Adam without torch.optim;
- :mod:`~valbench.gradsim.driver`: engine choice, memory-safe chunking;
- :mod:`~valbench.gradsim.masks`: device-independent per-sample dropout masks;
- :mod:`~valbench.gradsim.precision`: dtype float32 | tf32 | bf16;
- :mod:`~valbench.gradsim.similarity`: cosine / dot / projection / euclidean from dot
  products and norms;
- :mod:`~valbench.gradsim.dvgs`: the DVGS algorithm itself (``dvgs(task, DVGSConfig(...))``;
  :mod:`~valbench.gradsim.config`: its parameters, torch-free);
- :mod:`~valbench.gradsim.persample`: <g_i, v> for any vector v at given parameters
  (:class:`SampleGradients`), for other gradient-based valuers (influence, TracIn).
"""
import importlib

# torch-free, and imported here so that the name `similarity` is the function, not its module
from valbench.gradsim.similarity import SIMILARITIES, similarity  # noqa: F401 (in __all__ below)

# Each other name and the submodule it comes from, imported on first use (PEP 562): a
# plugin that imports DVGSConfig (valbench.gradsim.config) loads without torch.
_HOMES = {
    **dict.fromkeys(["ENGINES", "build_engine", "choose_engine", "source_terms"], "driver"),
    **dict.fromkeys(["UnsupportedModel", "check_model", "select_parameters"], "engines"),
    **dict.fromkeys(["SampleGradients", "TaskTensors", "check_sample_gradients", "task_tensors"], "persample"),
}
__all__ = sorted([*_HOMES, "SIMILARITIES", "similarity"])


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
