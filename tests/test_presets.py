"""Presets: each resolves to the numbers of docs/protocol.md (its tables are parsed here, so
the document and the presets cannot drift apart), carries the published results, and the
CLI lists, shows, narrows and runs them (with --dry-run: no valuation runs here)."""
import inspect
import itertools
import math
import pathlib
import re

import numpy as np
import pytest

from valbench import presets
from valbench.cli import main
from valbench.grid import build_experiment, load_toml
from valbench.params import parse_spec, resolve

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()
EXPERIMENTS = [f"exp{i}" for i in range(1, 11)]


# --- docs/protocol.md, parsed -------------------------------------------------------

def tables_after(heading: str) -> list[list[dict[str, str]]]:
    """The markdown tables of docs/protocol.md from ``heading`` to the next '## ' heading,
    each as a list of {column: cell}."""
    start = PROTOCOL.index(heading)
    end = PROTOCOL.find("\n## ", start + len(heading))
    tables, rows = [], []
    for line in PROTOCOL[start:end if end >= 0 else None].splitlines() + [""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            header, body = rows[0], rows[2:]
            tables.append([dict(zip(header, r)) for r in body])
            rows = []
    return tables


def experiment_rows() -> dict[int, dict[str, str]]:
    """The table 'The experiments exp1-exp10', with every 'as expN' cell replaced by exp N's."""
    rows = {int(r["exp"]): r for r in tables_after("## The experiments exp1-exp10")[0]}
    for n in sorted(rows):
        for col, cell in rows[n].items():
            m = re.fullmatch(r"as exp(\d+)", cell)
            if m:
                rows[n][col] = rows[int(m.group(1))][col]
    return rows


def published_rows() -> dict[int, dict[str, str]]:
    return {int(r["exp"]): r for r in tables_after("## The experiments exp1-exp10")[1]}


def filtering_rows() -> dict[str, dict[str, str]]:
    return {r["data"]: r for r in tables_after("## §3 Scoring")[0]}


VALUER_NAMES = {"dshap": "tmc-shapley"}  # the paper's names -> valbench's


def expected(n: int) -> dict:
    """What exp n of docs/protocol.md asks for, in valbench's terms."""
    row = experiment_rows()[n]
    data = row["data"]
    dataset = {"ADULT": ("adult", {}), "BLOG": ("blog", {}),
               "CIFAR10 Inception": ("cifar10", {"representation": "inception"}),
               "CIFAR10 pixels": ("cifar10", {"representation": "pixels"}),
               "LINCS APC>0.5": ("lincs", {"high_apc": "all"}),
               "LINCS all": ("lincs", {"high_apc": "none"}),
               "LINCS, target/test APC>0.5": ("lincs", {"high_apc": "target"})}
    name, params = next(v for k, v in sorted(dataset.items(), key=lambda kv: -len(kv[0])) if data.startswith(k))
    sizes_cell = row["source / target / test"]
    if name == "lincs":
        params["balance"] = "balanced" in sizes_cell
        widths = re.search(r"AE 978-(\d+)-(\d+)", data)  # exp8: the default 978-250-32
        if widths and widths.groups() != ("250", "32"):
            params.update(hidden=int(widths.group(1)), latent=int(widths.group(2)))
    sizes = [s.strip() for s in sizes_cell.split(",")[0].split("/")]

    def size(cell: str):
        if cell == "rest" or cell.startswith("rest"):
            approx = re.search(r"~(\d+)k", cell)
            return ("rest", int(approx.group(1)) * 1000 if approx else None)
        return int(cell)

    corruption_cell = row["corruption"]
    if corruption_cell.startswith("labels"):
        corruption = ("labels", {"rate": int(re.search(r"(\d+)%", corruption_cell).group(1)) / 100})
    elif corruption_cell.startswith("features"):
        corruption = ("features", {"max": float(re.search(r"max (\d+)", corruption_cell).group(1))})
    else:
        assert corruption_cell == "none"
        corruption = ("none", {})
    dvgs_cell = row["DVGS R / E / tb / sb, balance"]
    numbers, _, balance = dvgs_cell.partition(",")
    r, e, tb, sb = (int(re.match(r"\d+", p.strip()).group()) for p in numbers.split("/"))
    runs = row["runs"]
    return {
        "dataset": (name, params), "sizes": [size(s) for s in sizes], "corruption": corruption,
        "mode": {"sup.": "supervised", "unsup.": "unsupervised"}[row["mode"]],
        "valuers": {VALUER_NAMES.get(v, v) for v in re.split(r",\s*|\s+vs\s+", row["valuers"])},
        "dvgs": {"restarts": r, "epochs": e, "target_batch": tb, "source_batch": sb},
        "balance": {"yes": True, "no": False}[balance.strip()],
        "snapshots": int(row["snap."]),
        "seeds": runs, "feeds": [f.strip() for f in row["feeds"].split(",")],
    }


# --- the preset, resolved ------------------------------------------------------------------

def learner_balances(dataset: str, mode: str) -> bool:
    """Whether the task's learner class-balances (what dvgs' class_balance=None follows):
    ADULT and BLOG give the class-balanced binary MLP, CIFAR10 the unbalanced image MLP;
    without labels nothing is balanced (checked in test_learner_balance_as_assumed)."""
    return mode == "supervised" and dataset in ("adult", "blog")


def test_learner_balance_as_assumed():
    from valbench import datautil
    from valbench.training.models import default_learner
    from valbench_plugins.datasets import adult, blog, cifar10

    g = np.random.default_rng(0)
    x, y = g.random((20, 3)), np.arange(20) % 2
    assert datautil.binary_tabular_splits(0, "t", x, y, x, y, 5, 5, 5).learner.class_balance is True
    pools = (np.arange(5), np.arange(5), np.arange(5, 10))
    img = datautil.image_classification_splits(lambda a: a, x, y, x, y, pools, 3)
    assert img.learner.class_balance is False
    for module in (adult, blog):
        assert "binary_tabular_splits(" in inspect.getsource(module)
    assert "image_classification_splits(" in inspect.getsource(cifar10)
    assert default_learner(978, None).class_balance is False
    assert default_learner(3072, None, (3, 32, 32)).class_balance is False


def effective_sizes(dataset) -> list:
    from valbench_plugins.datasets.cifar10 import DEFAULT_SOURCE

    p = dict(dataset.params)
    n_source = p["n_source"]
    if dataset.name == "cifar10" and n_source is None:
        n_source = DEFAULT_SOURCE[p["representation"]]
    return [n_source, p["n_target"], p["n_test"]]


def only(items):
    assert len(items) == 1, items
    return items[0]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_preset_resolves_to_the_protocols_numbers(name, registry):
    n = int(name[3:])
    want = expected(n)
    raw = presets.load(name)
    exp = build_experiment(raw)
    dataset = resolve(registry, "dataset", only(exp.datasets))
    corruption = resolve(registry, "corruption", only(exp.corruptions))
    valuers = [resolve(registry, "valuer", v) for v in exp.valuers]
    metrics = [resolve(registry, "metric", m) for m in exp.metrics]

    # data and sizes
    ds_name, ds_params = want["dataset"]
    assert dataset.name == ds_name
    assert {k: dict(dataset.params)[k] for k in ds_params} == ds_params
    for got, wanted in zip(effective_sizes(dataset), want["sizes"]):
        if isinstance(wanted, tuple):  # "rest": all that is left; valbench's lincs needs the size given
            if wanted[1] is None:  # "rest" without a number: the test pool's rest, or as the row above
                assert got is None or abs(got - 710_000) <= 0.02 * 710_000, got
            else:
                assert got is not None and abs(got - wanted[1]) <= 0.02 * wanted[1], (got, wanted)
        else:
            assert got == wanted
    # corruption, mode, seeds
    assert (corruption.name, {k: dict(corruption.params)[k] for k in want["corruption"][1]}) == want["corruption"]
    assert exp.mode == want["mode"]
    if want["seeds"] in ("5", "n/s"):  # n/s: not stated; the protocol runs 5
        assert len(exp.seeds) == 5
    else:
        assert want["seeds"] == ">= 3" and len(exp.seeds) >= 3
    # valuers and their settings
    assert {v.name for v in valuers} == want["valuers"]
    assert len({v.label for v in valuers}) == len(valuers)
    dvgs = dict(only([v for v in valuers if v.name == "dvgs"]).params)
    assert {k: dvgs[k] for k in want["dvgs"]} == want["dvgs"]
    assert (dvgs["lr"], dvgs["similarity"], dvgs["period"], dvgs["parameters"]) == (1e-3, "cosine", 1, "all")
    balance = dvgs["class_balance"] if dvgs["class_balance"] is not None else learner_balances(ds_name, exp.mode)
    assert balance is want["balance"]
    n_target = effective_sizes(dataset)[1]
    assert dvgs["restarts"] * dvgs["epochs"] * math.ceil(n_target / dvgs["target_batch"]) == want["snapshots"]
    for v in valuers:
        p = dict(v.params)
        if v.name == "tmc-shapley":  # the DVGS port's settings (docs/protocol.md, 'The DVGS port')
            assert (p["tolerance"], p["stopping"]) == (0.03, "spearman")
        if v.name == "dvrl":  # a moving baseline for CIFAR10 and LINCS, the reference's fixed one otherwise
            assert p["baseline"] == ("moving" if ds_name in ("cifar10", "lincs") else "fixed")
    # metrics: the table's score (and the other mask scores), and the filtering curves of §3
    truth = {"labels": {"corruption-auroc", "corruption-ap", "corruption-found"}, "features": {"noise-spearman"},
             "none": set()}[corruption.name]
    assert {m.name for m in metrics} == truth | {"filtering"}
    filtering = dict(only([m for m in metrics if m.name == "filtering"]).params)
    row_name = {"adult": "ADULT, BLOG", "blog": "ADULT, BLOG", "lincs": "LINCS"}.get(ds_name) or (
        "CIFAR10 features" if exp.mode == "supervised" else "CIFAR10 autoencoder")
    row = filtering_rows()[row_name]
    lo, hi, count = (float(x) for x in re.fullmatch(r"linspace\((.*)\)", row["q"]).group(1).split(","))
    assert (lo, filtering["max_fraction"], filtering["fractions"], filtering["replicates"]) == (
        0.0, hi, int(count), int(row["replicates"]))
    # what it feeds
    text = presets.description(name)
    assert text.startswith(f"{name}: ")
    for feed in want["feeds"]:
        head, _, note = feed.partition(" (")
        assert head in text and note.rstrip(")") in text, (feed, text)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_paper_entries_are_the_published_table(name, registry):
    n = int(name[3:])
    row = published_rows()[n]
    raw = presets.load(name)
    entries = presets.published(name)
    for e in entries:
        assert e["preset"] == name and (e["datasets"], e["corruptions"], e["mode"]) == (
            raw["datasets"], raw["corruptions"], raw["mode"])
        assert e["valuer"] in raw["valuers"]  # exactly as listed, and that is its table label
        assert resolve(registry, "valuer", e["valuer"]).label == e["valuer"]
    if row["score"].startswith("Pearson"):  # exp9/10: only a correlation, quoted in the description
        assert entries == []
        assert row["score"].split("Pearson")[1] in presets.description(name)
        return
    metric = {"AUROC": "corruption-auroc", "Spearman": "noise-spearman"}[row["score"]]
    columns = ["dvgs", "dshap", "dvrl", "loo", "random"]
    minutes = [m.strip() for m in row["minutes dvgs / dshap / dvrl / loo / random"].split("/")]
    want = []
    for col, mins in zip(columns, minutes):
        if row[col] == "-":
            assert mins == "-"
            continue
        mean, std = (float(x) for x in row[col].split("±"))
        spec = only([v for v in raw["valuers"] if parse_spec(v).name == VALUER_NAMES.get(col, col)])
        want.append({"valuer": spec, "metric": metric, "mean": mean, "std": std, "minutes": float(mins)})
    got = [{k: e[k] for k in ("valuer", "metric", "mean", "std", "minutes")} for e in entries]
    assert sorted(got, key=str) == sorted(want, key=str)


def test_paper_preset_is_every_experiment_in_order():
    assert presets.members("paper") == EXPERIMENTS
    assert presets.published("paper") == [e for n in EXPERIMENTS for e in presets.published(n)]
    with pytest.raises(Exception, match="collection of exp1, exp2"):
        presets.load("paper")


def test_fig6_is_the_supplements_table_4_grid(registry):
    """Table 4's DVGS axes (balanced class weights, dropout 0 or the learner's, target batch,
    similarity, lr), 1 restart, 2 replicates, on exp1's data."""
    raw = presets.load("fig6")
    exp = build_experiment(raw)
    assert (len(exp.seeds), exp.mode) == (2, "supervised")
    assert presets.load("exp1")["datasets"] == raw["datasets"] and raw["corruptions"] == ["labels[rate=0.2]"]
    grid = set()
    for spec in exp.valuers:
        p = dict(resolve(registry, "valuer", spec).params)
        assert (p["restarts"], p["epochs"], p["period"]) == (1, 100, 1)
        grid.add((p["class_balance"], p["dropout"], p["target_batch"], p["similarity"], p["lr"]))
    assert grid == set(itertools.product([True, False], [True, False], [100, 200, 400],
                                         ["euclidean", "cosine", "dot", "projection"], [1e-2, 1e-3, 1e-4]))
    assert len(exp.valuers) == len(grid) == 144
    assert "filtering" not in raw["metrics"] and "corruption-auroc" in raw["metrics"]


def test_fig8_is_runtime_against_sources_and_period(registry):
    exp = build_experiment(presets.load("fig8"))
    sizes = [dict(resolve(registry, "dataset", d).params)["n_source"] for d in exp.datasets]
    assert sizes == list(np.linspace(500, 30000, 10, dtype=int))
    periods = sorted(dict(resolve(registry, "valuer", v).params)["period"] for v in exp.valuers)
    assert periods == [1, 2, 5]
    assert all(dict(resolve(registry, "valuer", v).params)["restarts"] == 1 for v in exp.valuers)


@pytest.mark.parametrize("name", sorted(set(presets.names()) - {"paper"}))
def test_every_preset_is_a_valid_config_file(name, registry, tmp_path):
    """What `preset show` prints is an experiment file: every spec resolves (no data read)."""
    path = tmp_path / f"{name}.toml"
    path.write_text(presets.text(name))
    raw = load_toml(path)
    assert "description" not in raw and "paper" not in raw
    assert raw == presets.load(name)
    exp = build_experiment(raw)
    for kind, specs in (("dataset", exp.datasets), ("corruption", exp.corruptions), ("valuer", exp.valuers),
                        ("metric", exp.metrics)):
        for spec in specs:
            resolve(registry, kind, spec)
    assert presets.description(name).count("\n") == 0


def test_unknown_keys_are_still_refused(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('valuerz = ["random"]\n' + presets.text("exp1"))
    with pytest.raises(Exception, match="unknown key 'valuerz'"):
        load_toml(path)
    path.write_text(presets.text("exp1") + 'valuerz = ["random"]\n')  # inside the last [[paper]]
    with pytest.raises(Exception, match="unknown key 'valuerz' in a \\[\\[paper\\]\\] entry"):
        load_toml(path)
    path.write_text('presets = ["exp1"]\nvaluers = ["random"]\n')
    with pytest.raises(Exception, match="takes no 'valuers'"):
        load_toml(path)


def test_narrow():
    raw = presets.load("exp4")
    out = presets.narrow(raw, "dvgs,knn-shapley,dvrl[iterations=5],random", seeds="2")
    assert out["valuers"] == ["dvgs[restarts=10]", "knn-shapley", "dvrl[iterations=5]", "random"]
    assert out["seeds"] == "2" and raw["seeds"] == 5 and raw["valuers"][0] == "dvgs[restarts=10]"
    assert presets.narrow(raw) == raw
    fig8 = presets.load("fig8")
    assert presets.narrow(fig8, ["dvgs"])["valuers"] == fig8["valuers"]  # every dvgs of the preset
    assert presets.narrow(fig8, "dvgs[period=3]")["valuers"] == ["dvgs[period=3]"]


# --- the command line ------------------------------------------------------------------

def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_preset_list_and_show(capsys):
    rc, out, _ = run_cli(capsys, "preset", "list")
    assert rc == 0
    lines = out.splitlines()
    assert [l.split()[0] for l in lines] == presets.names() == EXPERIMENTS + ["fig6", "fig8", "paper"]
    assert all(l.split(None, 1)[1] == presets.description(l.split()[0]) for l in lines)
    rc, out, _ = run_cli(capsys, "preset", "show", "exp1")
    assert rc == 0 and out == presets.text("exp1") and "[[paper]]" in out
    rc, _, err = run_cli(capsys, "preset", "show", "exp11")
    assert rc == 2 and "unknown preset 'exp11'" in err and "exp1, exp2" in err


def dry(capsys, *argv):
    rc, out, err = run_cli(capsys, "run", "--dry-run", *argv)
    assert rc == 0, err
    return out.splitlines()[:-1], out.splitlines()[-1], err


def test_show_then_config_runs_the_same_jobs(capsys, tmp_path):
    res = str(tmp_path / "r.sqlite")
    rc, shown, _ = run_cli(capsys, "preset", "show", "exp1")
    (tmp_path / "mine.toml").write_text(shown)
    from_preset = dry(capsys, "--preset", "exp1", "--results", res)
    from_file = dry(capsys, "--config", str(tmp_path / "mine.toml"), "--results", res)
    assert from_preset[:2] == from_file[:2]
    assert len(from_preset[0]) == 25 and "adult / labels / tmc-shapley[stopping=spearman,tolerance=0.03] / seed 4" in from_preset[0]
    assert not (tmp_path / "r.sqlite").exists()


def test_run_preset_narrowed(capsys, tmp_path):
    jobs, last, _ = dry(capsys, "--preset", "exp4", "--valuers", "dvgs,knn-shapley", "--seeds", "2",
                        "--results", str(tmp_path / "r.sqlite"))
    assert jobs == [f"adult / features / {v} / seed {s}" for v in ("dvgs[restarts=10]", "knn-shapley") for s in (0, 1)]
    jobs, _, _ = dry(capsys, "--preset", "exp1", "--valuers", "random", "--corruptions", "labels[rate=0.4]",
                     "--datasets", "adult[n_source=500]", "--seeds", "1", "--results", str(tmp_path / "r.sqlite"))
    assert jobs == ["adult[n_source=500] / labels[rate=0.4] / random / seed 0"]


def test_valuers_alone_run_preset_exp1_into_the_default_store(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    jobs, last, err = dry(capsys, "--valuers", "dvgs,dvrl")
    assert err == ("valbench: no data given: running preset exp1 (ADULT, 20% flipped labels, 5 seeds); "
                   "see 'valbench preset list'\n")
    assert presets.DEFAULT_DATA in presets.description("exp1")
    assert jobs == [f"adult / labels / {v} / seed {s}" for v in ("dvgs", "dvrl") for s in range(5)]
    assert "runs/results.sqlite" in last and not (tmp_path / "runs").exists()
    _, _, err = dry(capsys, "--valuers", "loo", "--seeds", "2")
    assert "(ADULT, 20% flipped labels, 2 seeds)" in err


def test_nothing_given_names_the_choices(capsys, tmp_path):
    for argv in ([], ["--seeds", "3"]):
        rc, _, err = run_cli(capsys, "run", "--results", str(tmp_path / "r.sqlite"), *argv)
        assert rc == 2 and err.count("\n") == 1
        assert "--preset" in err and "--config" in err and "--valuers" in err and "valbench preset list" in err
    rc, _, err = run_cli(capsys, "run", "--preset", "exp1", "--config", "x.toml")
    assert rc == 2 and "not both" in err


def test_unknown_preset_names_the_known_ones(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "run", "--preset", "exp0", "--results", str(tmp_path / "r.sqlite"))
    assert rc == 2 and err.count("\n") == 1
    assert "unknown preset 'exp0'" in err and ", ".join(presets.names()) in err
    assert not (tmp_path / "r.sqlite").exists()


@pytest.mark.parametrize("name, missing", [("exp2", "BlogFeedback.zip"), ("exp3", "cifar-10-binary.tar.gz"),
                                           ("exp8", "level5_beta_trt_cp_n720216x12328.gctx"),
                                           ("paper", "BlogFeedback.zip")])
def test_missing_data_names_the_file_and_writes_nothing(capsys, tmp_path, name, missing):
    """The data cache is empty and downloads are off (conftest): the first missing file is
    named, with where to get it, before any work (for paper: before exp1 runs)."""
    store = tmp_path / "r.sqlite"
    rc, out, err = run_cli(capsys, "run", "--preset", name, "--results", str(store))
    assert rc == 2, err
    assert err.startswith("valbench: error: ") and err.count("\n") == 1 and missing in err
    assert "download" in err
    assert not store.exists() and out == ""


def test_a_file_naming_presets_runs_them(capsys, tmp_path):
    (tmp_path / "two.toml").write_text('description = "mine"\npresets = ["exp1", "exp4"]\n')
    rc, out, _ = run_cli(capsys, "run", "--dry-run", "--config", str(tmp_path / "two.toml"), "--valuers", "random",
                         "--seeds", "1", "--results", str(tmp_path / "r.sqlite"))
    assert rc == 0
    assert out.splitlines() == ["adult / labels / random / seed 0", f"exp1: 1 jobs: 1 would run, 0 finished or failed in "
                                f"{tmp_path / 'r.sqlite'} (nothing was run or written); scored with corruption-auroc, "
                                "corruption-ap, corruption-found, filtering",
                                "adult / features / random / seed 0", f"exp4: 1 jobs: 1 would run, 0 finished or "
                                f"failed in {tmp_path / 'r.sqlite'} (nothing was run or written); scored with "
                                "noise-spearman, filtering"]


def test_a_run_says_where_its_results_went(capsys, tmp_path):
    res = str(tmp_path / "r.sqlite")
    rc, out, _ = run_cli(capsys, "run", "--in-process", "--valuers", "random", "--datasets",
                         "synthetic[n_source=40,n_target=20,n_test=20]", "--corruptions", "labels", "--results", res)
    assert rc == 0
    assert out.splitlines()[-1] == (f"results in {res}; tables: valbench table 1|2|3 --results {res} (corrupted "
                                    f"labels, feature noise, runtime); everything with figures: valbench report "
                                    f"--results {res} --out report")


def test_a_preset_run_stores_the_published_numbers_beside_its_cells(capsys, tmp_path):
    """`valbench table` puts the paper's value beside ours for a preset's cells (one real,
    small run: random on exp1's data, one seed, no filtering)."""
    res = str(tmp_path / "r.sqlite")
    rc, out, err = run_cli(capsys, "run", "--preset", "exp1", "--valuers", "random", "--seeds", "1", "--metrics",
                           "corruption-auroc", "--in-process", "--results", res)
    assert rc == 0, err
    rc, out, _ = run_cli(capsys, "table", "1", "--results", res)
    assert rc == 0 and "0.503 ± 0.050" in out
    rc, out, _ = run_cli(capsys, "table", "3", "--results", res)
    assert rc == 0 and "| 1.2 min " in out  # the paper's minutes, as printed
    rc, _, _ = run_cli(capsys, "run", "--preset", "exp1", "--valuers", "random", "--seeds", "1", "--metrics",
                       "corruption-auroc", "--in-process", "--datasets", "adult[n_source=300]", "--results",
                       str(tmp_path / "other.sqlite"))
    from valbench.store import open_existing

    with open_existing(tmp_path / "other.sqlite") as store:  # not the preset's data: no published numbers
        assert store.paper().empty
    rc, _, _ = run_cli(capsys, "run", "--valuers", "random", "--seeds", "1", "--metrics", "corruption-auroc",
                       "--in-process", "--datasets", "adult", "--corruptions", "labels", "--results",
                       str(tmp_path / "typed.sqlite"))
    with open_existing(tmp_path / "typed.sqlite") as store:  # exp1 typed out by hand is exp1 too
        assert set(store.paper()["valuer"]) >= {"dvgs", "random", "tmc-shapley"}
