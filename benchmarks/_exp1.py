"""exp1's cell (ADULT, 20% flipped labels; docs/protocol.md) exactly as ``valbench run``
prepares it, for the benchmarks: the valuation task and the flipped-label mask."""
from __future__ import annotations

import numpy as np


def exp1_task(seed: int, device: str = "cpu", n_source: int | None = None, n_target: int | None = None,
              rate: float | None = None):
    """(task, flipped-label mask) of seed ``seed``; sizes and rate default to exp1's."""
    from valbench.api import plan
    from valbench.grid import build_experiment
    from valbench.plugins import build_registry
    from valbench.runner import task_for

    sizes = ",".join(f"{k}={v}" for k, v in (("n_source", n_source), ("n_target", n_target)) if v is not None)
    dataset = f"adult[{sizes}]" if sizes else "adult"
    corruption = "labels" if rate is None else f"labels[rate={rate}]"
    exp = build_experiment({"datasets": [dataset], "corruptions": [corruption], "valuers": ["random"],
                            "seeds": [seed]})
    jobs, cache = plan(exp, build_registry(), device)
    cell = cache.cell(jobs[0])
    return task_for(jobs[0], cell), np.asarray(cell.truth.values)
