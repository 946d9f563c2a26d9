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
- :mod:`~valbench.gradsim.dvgs`: the DVGS algorithm itself (``dvgs(task, DVGSConfig(...))``);
- :mod:`~valbench.gradsim.persample`: <g_i, v> for any vector v at given parameters
  (:class:`SampleGradients`), for other gradient-based valuers (influence, TracIn).
"""
from valbench.gradsim.driver import ENGINES, build_engine, choose_engine, source_terms
from valbench.gradsim.engines import UnsupportedModel, check_model, select_parameters
from valbench.gradsim.persample import SampleGradients, TaskTensors, task_tensors
from valbench.gradsim.similarity import SIMILARITIES, similarity

__all__ = ["ENGINES", "SIMILARITIES", "SampleGradients", "TaskTensors", "UnsupportedModel", "build_engine",
           "check_model", "choose_engine", "select_parameters", "similarity", "source_terms", "task_tensors"]
