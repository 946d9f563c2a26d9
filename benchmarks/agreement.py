"""Agreement of valbench's valuers with the same methods in pyDVL and OpenDataVal.

On one small exp1-like split (ADULT, ``--n-source`` source samples with 20% flipped
labels, ``--n-target`` target samples, all from valbench's own ``adult`` dataset and
``labels`` corruption, so every run sees identical data) each method runs in valbench
and in each installed library; per method it prints, for every run, the seconds, the
model fits, the Spearman rank correlation of its values with valbench's, and the AUROC
of flipped-label detection (flipped = low value). For sampled methods the line
``valbench seed+1`` is the noise floor: valbench's own correlation with a run whose
task seed differs (same data; sampling, initialisation and dropout masks change).

Identical utility: the libraries' retraining methods get valbench's learner wrapped in
their model interface (benchmarks/agreement_models.py): the task's one initialisation,
``--steps`` full-batch Adam steps at ``--lr``, shared dropout masks per source row, and
the task's metric (target AUROC) computed by valbench's scoring. LOO is therefore
exactly comparable (valbench runs it with full_models=1); KNN-Shapley uses the same K
and Euclidean distance and needs no model. DVRL and Data-OOB use the wrapped learner too,
but each library keeps its own outer algorithm. influence / tracin: the libraries
differentiate valbench's source model (the learner trained once with its own recipe, as
valbench's influence and tracin do); OpenDataVal's InfluenceFunction is first order (a
sum of gradient dot products at the final model: TracIn with one checkpoint, or
influence without the inverse Hessian), so it stands in for both.

Installs nothing. Needs pyDVL and/or OpenDataVal importable (benchmarks/README.md says
how to install them beside valbench without replacing torch); a library or valuer that
is missing is reported with the reason and skipped.

    python benchmarks/agreement.py --quick                    # minutes on 2 CPU cores
    python benchmarks/agreement.py --methods loo knn-shapley --libraries pydvl
    python benchmarks/agreement.py --markdown results.md     # also write the summary table
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: the libraries' bars would drown the tables

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules beside this file
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=UserWarning)

from agreement_models import Context  # noqa: E402
from agreement_oracles import RUNNERS, Budget, Skip, library_versions  # noqa: E402
from _exp1 import exp1_task  # noqa: E402
from valbench.plugins import build_registry  # noqa: E402

METHODS = ("loo", "knn-shapley", "banzhaf", "tmc-shapley", "data-oob", "dvrl", "beta-shapley", "ame",
           "influence-subsample", "lava", "class-wise-shapley", "influence", "tracin")
EXACT = {"loo", "knn-shapley"}  # same utility and no sampling: should agree to rounding
DETERMINISTIC = EXACT | {"lava", "influence", "tracin"}  # no noise floor to measure
# the valbench parameter that sets each kind of budget
BUDGET_FIELDS = {"subsets": "samples", "permutations": "max_permutations", "bags": "n_bags",
                 "iterations": "iterations"}
METHOD_BUDGET = {"banzhaf": "subsets", "ame": "subsets", "influence-subsample": "subsets",
                 "tmc-shapley": "permutations", "beta-shapley": "permutations", "class-wise-shapley": "permutations",
                 "data-oob": "bags", "dvrl": "iterations"}


def valbench_params(method: str, cls: type, args: argparse.Namespace, b: Budget) -> dict:
    """The valuer's parameters that make it the libraries' run: the same utility recipe,
    the same budget, the same K / Beta weights; only fields the valuer has are set."""
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    if not fields:
        import inspect
        fields = set(inspect.signature(cls).parameters)
    want = {"steps": args.steps, "lr": args.lr, "compile": False, "full_models": 1, "k": b.k,
            "alpha": b.alpha, "beta": b.beta}
    if method == "data-oob":
        want["learner"] = "mlp"
    if method == "tmc-shapley":
        want["tolerance"] = 0.01
    if METHOD_BUDGET.get(method) == "permutations":
        want["min_permutations"] = b.permutations  # exactly that many: no stopping rule before the cap
    if method in METHOD_BUDGET:
        want[BUDGET_FIELDS[METHOD_BUDGET[method]]] = getattr(b, METHOD_BUDGET[method])
    if method in ("dvrl", "influence", "tracin"):
        want.pop("steps"), want.pop("lr")  # they train with their own recipes (tracin's lr is not the utility's)
    return {k: v for k, v in want.items() if k in fields}


def auroc(truth: np.ndarray, values: np.ndarray) -> float:
    return float(roc_auc_score(truth, -values)) if 0 < truth.sum() < len(truth) else float("nan")


def rho(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def run_method(method: str, task, truth, args, b: Budget, registry, versions) -> list[dict]:
    rows = []
    if method not in registry.names("valuer"):
        print(f"skipped: valuer '{method}' is not registered in this valbench")
        return [dict(method=method, run="valbench", note="skipped: not registered in this valbench")]
    cls = registry.get("valuer", method).cls
    params = valbench_params(method, cls, args, b)

    def valbench_run(t) -> tuple[np.ndarray, float, int]:
        start = time.perf_counter()
        val = cls(**params).value(t)
        return np.asarray(val.values, dtype=np.float64), time.perf_counter() - start, val.fits

    try:
        ref, sec, fits = valbench_run(task)
    except Exception as exc:  # noqa: BLE001 - e.g. an optional dependency of the valuer is missing
        print(f"skipped: valbench's {method} failed: {type(exc).__name__}: {exc}")
        return [dict(method=method, run="valbench", note=f"skipped: failed: {type(exc).__name__}: {str(exc)[:120]}")]
    rows.append(dict(method=method, run="valbench", seconds=sec, fits=fits, rho=1.0, auroc=auroc(truth, ref),
                     note=", ".join(f"{k}={v}" for k, v in sorted(params.items()))))
    if args.noise_floor and method not in DETERMINISTIC:
        other, sec, fits = valbench_run(dataclasses.replace(task, seed=task.seed + 1))
        rows.append(dict(method=method, run="valbench seed+1", seconds=sec, fits=fits, rho=rho(ref, other),
                         auroc=auroc(truth, other), note="noise floor"))
    for lib in args.libraries:
        if versions[lib].startswith("unavailable"):
            rows.append(dict(method=method, run=lib, note=versions[lib]))
            continue
        ctx = Context(task, args.steps, args.lr)
        start = time.perf_counter()
        try:
            values = RUNNERS[lib](method, ctx, b, task.seed)
        except Skip as exc:
            rows.append(dict(method=method, run=lib, note=str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one library's failure must not stop the table
            rows.append(dict(method=method, run=lib, note=f"failed: {type(exc).__name__}: {str(exc)[:120]}"))
            continue
        sec = time.perf_counter() - start
        note = "max |diff| %.2g" % float(np.abs(values - ref).max()) if method in EXACT else ""
        rows.append(dict(method=method, run=lib, seconds=sec, fits=ctx.fits, rho=rho(ref, values),
                         auroc=auroc(truth, values), note=note))
    return rows


def fmt(v, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def table(rows: list[dict]) -> str:
    lines = ["| method | run | seconds | fits | Spearman vs valbench | flip AUROC | note |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['run']} | {fmt(r.get('seconds'), '.1f')} | {fmt(r.get('fits'), 'd')} | "
                     f"{fmt(r.get('rho'), '.3f')} | {fmt(r.get('auroc'), '.3f')} | {r.get('note', '')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small budgets: minutes on 2 CPU cores")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--libraries", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-source", type=int, default=200)
    ap.add_argument("--n-target", type=int, default=200)
    ap.add_argument("--rate", type=float, default=0.2, help="fraction of flipped source labels")
    ap.add_argument("--steps", type=int, default=None, help="utility: full-batch Adam steps (default 200, quick 50)")
    ap.add_argument("--lr", type=float, default=None, help="utility: Adam learning rate (default 1e-4, quick 1e-3)")
    ap.add_argument("--no-noise-floor", dest="noise_floor", action="store_false")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the libraries fit one small model at a time)")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the summary table here")
    args = ap.parse_args()
    args.steps = args.steps or (50 if args.quick else 200)
    args.lr = args.lr or (1e-3 if args.quick else 1e-4)
    b = Budget(subsets=60, permutations=3, bags=30, iterations=30) if args.quick else Budget()
    torch.set_num_threads(args.threads)

    versions = library_versions()
    import valbench
    print(f"valbench {getattr(valbench, '__version__', '?')}, torch {torch.__version__}, "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))
    task, truth = exp1_task(args.seed, n_source=args.n_source, n_target=args.n_target, rate=args.rate)
    ctx = Context(task, args.steps, args.lr)
    print(f"ADULT: {len(task.source)} source ({int(truth.sum())} flipped), {len(task.target)} target, seed {args.seed}; "
          f"utility: {args.steps} full-batch Adam steps at lr {args.lr}, metric {task.metric}; "
          f"{ctx.duplicates} duplicate source rows; budgets {b}", flush=True)
    registry = build_registry()
    rows = []
    for method in args.methods:
        print(f"\n## {method}", flush=True)
        mrows = run_method(method, task, truth, args, b, registry, versions)
        print(table(mrows), flush=True)
        rows += mrows
    print("\n# summary\n" + table(rows))
    if args.markdown:
        args.markdown.write_text(table(rows) + "\n")


if __name__ == "__main__":
    main()
