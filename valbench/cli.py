"""valbench's command line: parse, call the API, print. Errors are one line, exit 2."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any, Sequence

from valbench.errors import ValbenchError

EXAMPLE = "valbench run --valuers random --datasets adult --corruptions labels,features --seeds 5 --results runs/demo.sqlite"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    from valbench.types import KINDS  # numpy: imported after the fork server has started

    p = _Parser(prog="valbench", description="Benchmark data valuation methods (DVGS and baselines).")
    from valbench import __version__

    p.add_argument("--version", action="version", version=f"valbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run every dataset x corruption x valuer x seed job not yet in the store",
                       description=f"Run a grid of valuation jobs into a results store. Example: {EXAMPLE}")
    r.add_argument("--preset", help="one of the paper's experiments, e.g. exp1, or paper for all of them "
                                    "('valbench preset list'); the flags below narrow it")
    r.add_argument("--config", help="an experiment TOML file (keys: datasets, corruptions, valuers, metrics, seeds, mode, device)")
    r.add_argument("--datasets", help="comma-separated dataset specs, e.g. 'adult[n_source=500]'")
    r.add_argument("--corruptions", help="comma-separated corruption specs, e.g. 'labels[rate=0.4],features'")
    r.add_argument("--valuers", help="comma-separated valuer specs, e.g. 'random'; with --preset, a bare name "
                                     "takes the preset's parameters (without data given: preset exp1's data)")
    r.add_argument("--metrics", help="metrics to score (default: every metric that fits the corruption)")
    r.add_argument("--seeds", help="number of seeds (runs seeds 0..N-1); default 1")
    r.add_argument("--mode", choices=["supervised", "unsupervised"], help="learning mode (default supervised)")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where valuers run (default auto)")
    r.add_argument("--workers", type=int, default=1,
                   help="worker processes that run the jobs, each isolated (default 1)")
    r.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local worker processes, or Ray tasks on RAY_ADDRESS's cluster or a local Ray instance")
    r.add_argument("--in-process", action="store_true",
                   help="run the jobs in this process instead (for debugging: no timeout or memory limit)")
    r.add_argument("--retry-failed", action="store_true",
                   help="run again the jobs whose last attempt failed, timed out or ran out of memory")
    r.add_argument("--dry-run", action="store_true", help="say which jobs would run, and run nothing")
    r.add_argument("--timeout", type=float, help="seconds a job may take before it is stopped (default: no limit)")
    r.add_argument("--memory-limit", type=float, help="GiB a job's worker may hold (default: no limit)")
    r.add_argument("--results", default="runs/results.sqlite", help="results store (SQLite file)")

    ps = sub.add_parser("preset", help="the paper's experiments as presets: list them, or print one as TOML",
                        description="Presets are the paper's experiments (docs/protocol.md) as experiment files: "
                                    "run one with 'valbench run --preset NAME', or start your own from "
                                    "'valbench preset show NAME > my.toml' and 'valbench run --config my.toml'.")
    pa = ps.add_subparsers(dest="action", required=True, parser_class=_Parser)
    pa.add_parser("list", help="every preset and what it feeds, one per line")
    show = pa.add_parser("show", help="print a preset's TOML")
    show.add_argument("name", help="the preset, e.g. exp1")

    t = sub.add_parser("table", help="print the paper's Table 1, 2 or 3 from a results store")
    t.add_argument("number", type=int, choices=[1, 2, 3])
    t.add_argument("--results", default="runs/results.sqlite")
    t.add_argument("--format", choices=["markdown", "latex", "csv"],
                   help="default: from --output's extension (.md, .tex, .csv), else markdown")
    t.add_argument("--metric", help="score to show in table 1 or 2 (default: the metric declaring that table)")
    t.add_argument("--output", help="write to this file instead of standard output")

    e = sub.add_parser("export", help="write every result (one row per job x score) as CSV or Parquet",
                       description="One row per job x score, with the job's configuration (plugin parameters as "
                                   "columns), status, timings and fits; the same as valbench.results.results(PATH).")
    e.add_argument("--results", default="runs/results.sqlite", help="results store (SQLite file)")
    e.add_argument("--format", choices=["csv", "parquet"], help="default: from the file's extension, else csv")
    e.add_argument("--output", "-o", required=True, help="the file to write")

    rp = sub.add_parser("report", help="write every table and figure a store allows into a folder",
                        description="Tables 1-3 (markdown, LaTeX, CSV), Figures 2-8 (PNG, PDF) and index.md with "
                                    "the provenance of every number; --html adds a self-contained leaderboard page.")
    rp.add_argument("--results", default="runs/results.sqlite", help="results store (SQLite file)")
    rp.add_argument("--out", required=True, help="the report folder (new, empty, or an earlier report: replaced)")
    rp.add_argument("--html", action="store_true", help="also write leaderboard.html (sortable, filterable)")

    sub.add_parser("plugins", help="list every registered plugin: kind, name, distribution, version")

    m = sub.add_parser("merge", help="join stores made apart (e.g. on separate machines) into a new store",
                       description="Write the union of several results stores to a new one: each job once, "
                                   "every finished attempt with its values; the inputs are not changed.")
    m.add_argument("stores", nargs="+", help="the stores to join")
    m.add_argument("-o", "--output", required=True, help="the new store (must not exist)")

    c = sub.add_parser("check", help="run the conformance kit on an installed plugin and print a report",
                       description="Run every conformance check of valbench.testing on one registered plugin "
                                   "(with its test_params). Exit 0 if none fails, 1 otherwise.")
    c.add_argument("name", help="the plugin's name, e.g. knn-shapley")
    c.add_argument("--kind", choices=KINDS,
                   help="needed only when several kinds have a plugin of that name")
    return p


def _registry():
    """The plugin registry; each third-party plugin skipped as broken is named once on stderr."""
    from valbench.plugins import build_registry

    registry = build_registry()
    for b in registry.broken:
        print(f"valbench: warning: {b.describe()}", file=sys.stderr)
    return registry


NOTHING = ("nothing to run: give --preset NAME (the paper's experiments: 'valbench preset list'), --config FILE, "
           "or --valuers (alone: on preset exp1's data; with --datasets and --corruptions: on yours)")


def _configs(args: argparse.Namespace) -> list[tuple[str | None, dict[str, Any]]]:
    """(preset name or None, raw configuration) of every experiment the flags ask for, in order."""
    from valbench import presets
    from valbench.grid import COLLECTION_KEY, load_toml

    if args.preset and args.config:
        raise_config("give --preset or --config, not both")
    raw: dict[str, Any] = load_toml(args.config) if args.config else {}
    names = None
    if args.preset:
        names = presets.members(args.preset)
    elif COLLECTION_KEY in raw:
        names = [m for n in raw[COLLECTION_KEY] for m in presets.members(n)]
    elif not args.config and args.datasets is None and args.corruptions is None:
        if args.valuers is None:
            raise_config(NOTHING)
        names = [presets.DEFAULT]
    if names is None:
        configs = [(None, raw)]
        flags: tuple[str, ...] = ("datasets", "corruptions", "valuers", "metrics", "seeds", "mode", "device")
    else:
        configs = [(n, presets.narrow(presets.load(n), args.valuers, args.seeds)) for n in names]
        flags = ("datasets", "corruptions", "metrics", "mode", "device")
    for _, config in configs:
        for key in flags:
            value = getattr(args, key)
            if value is not None:
                config[key] = value
    if names == [presets.DEFAULT] and not args.preset and not args.config:
        from valbench.grid import parse_seeds

        n = len(parse_seeds(configs[0][1].get("seeds", 1)))
        print(f"valbench: no data given: running preset {presets.DEFAULT} ({presets.DEFAULT_DATA}, {n} seeds); "
              "see 'valbench preset list'", file=sys.stderr)
    return configs


def _cmd_run(args: argparse.Namespace) -> int:
    from valbench import api
    from valbench.grid import build_experiment

    if args.workers < 1:
        raise_config(f"--workers must be >= 1, got {args.workers} (use --in-process to run in this process)")
    for name in ("timeout", "memory_limit"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise_config(f"--{name.replace('_', '-')} must be > 0, got {value}")
    configs = _configs(args)
    runs = [(name, build_experiment(raw), raw.get("device", "auto")) for name, raw in configs]
    many = len(runs) > 1
    registry = _registry()
    if args.dry_run or many:  # every grid and its data are checked before anything runs
        planned = [api.pending(exp, args.results, registry, device, args.retry_failed) for _, exp, device in runs]
    if args.dry_run:
        for (name, _, _), (jobs, todo, _) in zip(runs, planned):
            for job in todo:
                print(job.describe())
            labels = list(dict.fromkeys(m.label for job in todo for m in job.metrics))  # filtering costs retrains
            print(f"{name + ': ' if many else ''}{len(jobs)} jobs: {len(todo)} would run, {len(jobs) - len(todo)} "
                  f"finished or failed in {args.results} (nothing was run or written)"
                  + (f"; scored with {', '.join(labels)}" if labels else ""))
        return 0
    memory = int(args.memory_limit * 2**30) if args.memory_limit else None
    failed = 0
    for name, exp, device in runs:
        bar = _Progress()
        summary = api.run(exp, args.results, device=device,
                          workers=0 if args.in_process else args.workers, timeout=args.timeout, memory_limit=memory,
                          retry_failed=args.retry_failed, executor=args.executor,
                          registry=registry, progress=bar.update, on_plan=bar.start)
        bar.close()
        if bar.failures:  # the failures once more, together, after the progress lines
            print(f"{len(bar.failures)} jobs did not finish ok:", file=sys.stderr)
            for line in bar.failures:
                print(f"  {line}", file=sys.stderr)
        elsewhere = f", {summary.elsewhere} taken by another run on the store" if summary.elsewhere else ""
        if summary.rescored:
            elsewhere += f"; {summary.rescored} finished jobs scored with metrics they lacked"
        print(f"{name + ': ' if many else ''}{summary.jobs} jobs: {summary.ok} ok, {summary.failed} failed, "
              f"{summary.skipped} already in {args.results}{elsewhere}")
        failed += summary.failed
    print(f"results in {args.results}; tables: valbench table 1|2|3 --results {args.results} (corrupted labels, "
          f"feature noise, runtime); everything with figures: valbench report --results {args.results} --out report")
    return 1 if failed else 0


def raise_config(message: str) -> None:
    from valbench.errors import ConfigError

    raise ConfigError(message)


class _Progress:
    """A tqdm bar on a terminal; one line per finished job otherwise."""

    def __init__(self) -> None:
        self.bar = None
        self.done = 0
        self.total = 0
        self.failures: list[str] = []

    def start(self, jobs: int, skipped: int) -> None:
        self.total = jobs - skipped
        if skipped:
            print(f"{skipped} of {jobs} jobs already finished in the store; skipping them", file=sys.stderr)
        if sys.stderr.isatty() and self.total:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="job", file=sys.stderr)

    def update(self, job: Any, result: Any) -> None:
        self.done += 1
        scores = " ".join(f"{k}={v:.3f}" for k, v in result.scores.items() if ":" not in k)  # curves: see the store
        wall = f"{result.timing.wall_s:.2f}s" if result.timing else "-"
        status = result.status if result.status == "ok" else f"{result.status.upper()}: {result.error}"
        if result.status != "ok":
            self.failures.append(f"{job.describe()}: {result.status}: {result.error}")
        if self.bar is not None:
            self.bar.set_postfix_str(job.valuer.label)
            self.bar.update(1)
            if result.status != "ok":
                self.bar.write(f"{job.describe()}: {status}")
        else:
            print(f"[{self.done}/{self.total}] {job.describe()}: {status} {wall} {scores}".rstrip(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _cmd_preset(args: argparse.Namespace) -> int:
    from valbench import presets

    if args.action == "list":
        names = presets.names()
        width = max(map(len, names))
        for name in names:
            print(f"{name:<{width}}  {presets.description(name)}")
    else:
        sys.stdout.write(presets.text(args.name))
    return 0


def _format(output: str | None, given: str | None, by_suffix: dict[str, str], default: str) -> str:
    """The format asked for, else the one --output's extension names; a mismatch is an error."""
    suffix = os.path.splitext(output or "")[1].lower()
    implied = by_suffix.get(suffix)
    if given and implied and given != implied:
        raise_config(f"--format {given} does not match the extension of {output} ({implied}); "
                     "change one of them")
    return given or implied or default


def _cmd_table(args: argparse.Namespace) -> int:
    from valbench.report.tables import table
    from valbench.results import jobs_frame, metric_info, paper_frame
    from valbench.store import open_existing

    fmt = _format(args.output, args.format, {".md": "markdown", ".markdown": "markdown", ".tex": "latex",
                                             ".csv": "csv"}, "markdown")
    if args.output and os.path.isdir(args.output):
        raise_config(f"--output {args.output} is a folder; give a file name such as "
                     f"{os.path.join(args.output, f'table{args.number}.md')}")
    with open_existing(args.results) as store:
        text = table(jobs_frame(store), args.number, metric_info(store), fmt, args.metric, paper_frame(store))
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from valbench.results import export

    n = export(args.results, args.output, _format(args.output, args.format, {".csv": "csv", ".parquet": "parquet",
                                                                             ".pq": "parquet"}, "csv"))
    print(f"{args.output}: {n} rows (one per job x score) from {args.results}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from valbench.report.writer import write_report

    out = write_report(args.results, args.out, html=args.html)
    print(f"{out}/index.md: the report of {args.results}" + (f"; {out}/leaderboard.html" if args.html else ""))
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from valbench.plugins import build_registry

    registry = build_registry()
    rows = [(p.kind, p.name, p.distribution, p.version, p.module) for p in registry.all()]
    rows += [("BROKEN", b.plugin, b.distribution, "", b.error) for b in registry.broken]
    print(tabulate(rows, headers=["kind", "name", "distribution", "version", "module"], tablefmt="simple",
                   maxcolwidths=[None, None, None, None, 80]))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from valbench.errors import PluginError
    from valbench.testing import FAILED, XPASS, check_plugin
    from valbench.types import KINDS

    registry = _registry()
    kinds = [args.kind] if args.kind else [k for k in KINDS if args.name in registry.names(k)]
    if len(kinds) > 1:
        raise PluginError(f"'{args.name}' names a plugin of each kind {', '.join(kinds)}; choose one with --kind")
    if not kinds:
        import difflib

        everything = {p.name: p.kind for p in registry.all()}
        close = difflib.get_close_matches(args.name, everything, n=1)
        hint = f" (did you mean {everything[close[0]]} '{close[0]}'?)" if close else ""
        raise PluginError(f"no plugin named '{args.name}'{hint}; 'valbench plugins' lists them "
                          "(check takes a name only: the kit uses the plugin's test_params)")
    info = registry.get(kinds[0], args.name)
    outcomes = check_plugin(info.cls, kind=info.kind)
    print(f"{info.kind} '{info.name}' ({info.distribution} {info.version}, {info.module})")
    print(tabulate([(o.check, o.status, o.detail) for o in outcomes], headers=["check", "outcome", "detail"],
                   tablefmt="simple", maxcolwidths=[None, None, 90]))
    counts = {s: sum(o.status == s for o in outcomes) for s in dict.fromkeys(o.status for o in outcomes)}
    bad = sum(o.status in (FAILED, XPASS) for o in outcomes)
    print(", ".join(f"{n} {s}" for s, n in counts.items()) + (" -- FAILED" if bad else " -- conforms"))
    return 1 if bad else 0


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C (workers stopped, running attempts marked interrupted)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def _cmd_merge(args: argparse.Namespace) -> int:
    from valbench.merge import merge

    jobs, attempts = merge(args.stores, args.output)
    print(f"{args.output}: {jobs} jobs, {attempts} attempts from {len(args.stores)} stores")
    return 0


COMMANDS = {"run": _cmd_run, "preset": _cmd_preset, "table": _cmd_table, "export": _cmd_export, "report": _cmd_report,
            "plugins": _cmd_plugins, "check": _cmd_check, "merge": _cmd_merge}


def wait_policy() -> str:
    """OpenMP's wait policy for this run: spin (ACTIVE) on an idle machine, sleep (PASSIVE)
    beside busy processes. DVGS exp1 on the 2-core development machine, median of 3
    (benchmarks/thread_policy.py): quiet, ACTIVE 1.3 s and PASSIVE 4.3 s; beside one
    spinning neighbour, ACTIVE 4.4 s and PASSIVE 2.2 s. Idle = a 1-minute load average
    under max(0.5, cores / 4) when the run starts (a neighbour that starts later is not seen)."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average (Windows): the safe choice
        return "PASSIVE"
    return "ACTIVE" if load < max(0.5, (os.cpu_count() or 1) / 4) else "PASSIVE"


def starts_local_workers(argv: Sequence[str]) -> bool:
    """Whether the command line, read before it is parsed, runs jobs in local workers: then
    their fork server can start before anything else is imported. A wrong guess costs
    little: an idle server, or one started later by valbench.api.run, which starts it
    for every local run."""
    if not argv or argv[0] != "run" or {"--in-process", "--dry-run", "-h", "--help"} & set(argv):
        return False
    executors = [b for a, b in zip(argv, argv[1:]) if a == "--executor"]
    executors += [a.split("=", 1)[1] for a in argv if a.startswith("--executor=")]
    return "ray" not in executors


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", wait_policy())  # before torch loads; an exported value wins
    argv = list(sys.argv[1:] if argv is None else argv)
    if starts_local_workers(argv):
        from valbench.forkserver import warm_up

        warm_up()  # its imports (torch) overlap everything this process does from here on
    args = _parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():  # a scheduler's SIGTERM stops the run cleanly
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command](args)
    except ValbenchError as exc:
        print(f"valbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("valbench: interrupted; finished jobs are kept in the store", file=sys.stderr)
        return 130
    except Terminated:
        print("valbench: terminated; finished jobs are kept in the store", file=sys.stderr)
        return 143
    except OSError as exc:  # the environment, not valbench: a full disk, a folder without permission
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"valbench: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug in valbench or a plugin: still one line unless asked
        if os.environ.get("VALBENCH_DEBUG"):
            raise
        print(f"valbench: internal error: {type(exc).__name__}: {exc} (set VALBENCH_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
