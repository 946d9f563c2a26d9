import h5py
import numpy as np
import pytest

from valbench.datautil import weighted_sample
from valbench.errors import DataError
from valbench_plugins.datasets.lincs import GCTX
from valbench_plugins.datasets.lincs import LEVEL4, LEVEL5, Lincs
from tests.lincs_files import write_release


@pytest.fixture
def release(tmp_path):
    folder = tmp_path / "lincs2020"
    return folder, write_release(folder, n_sigs=60)


def small(folder, **kw):
    params = dict(path=str(folder), n_source=6, n_target=3, n_test=None, high_apc="none")
    params.update(kw)
    return Lincs(**params)


def trt_cp(written):
    return [s for s in written["sigs"] if s["pert_type"] == "trt_cp"]


def test_gctx_is_read_transposed_by_sample_and_gene(release):
    folder, w = release
    with GCTX(folder / LEVEL5) as f:
        assert f.matrix.shape == (60, len(w["gene_ids"]))  # (columns = samples, rows = genes)
        samples, genes = np.array([7, 2, 59, 2]), np.array([3, 0, 11])
        assert np.allclose(f.read(samples, genes), w["level5"][samples][:, genes])
        assert list(f.col_ids[:2]) == ["SIG000", "SIG001"]


def test_apc_equals_direct_mean_pairwise_pearson(release):
    folder, w = release
    ds = small(folder, max_replicates=3)
    prep = ds.prepared()
    landmark_cols = [i for i, gid in enumerate(w["gene_ids"]) if gid in w["landmark"]]
    col = {c: i for i, c in enumerate(w["level4_cols"])}
    expected = {}
    for s in trt_cp(w):
        reps = s["distil_ids"].split("|")[:3]
        if len(reps) < 2:
            continue
        prof = w["level4"][[col[r] for r in reps]][:, landmark_cols]
        c = np.corrcoef(prof)
        expected[s["sig_id"]] = c[np.triu_indices(len(reps), 1)].mean()
    with GCTX(folder / LEVEL5) as f:
        got = dict(zip(f.col_ids[prep.rows], prep.apc))
    assert got.keys() == expected.keys() and len(got) >= 10
    assert np.allclose([got[k] for k in expected], list(expected.values()), atol=1e-6)
    assert min(expected.values()) < 0.5 < max(expected.values())  # both sides of the threshold


def test_zscore_over_all_compound_signatures_and_landmarks_only(release):
    folder, w = release
    s = small(folder).load(0)
    assert s.n_classes is None and s.source.x.shape == (6, 12) and s.source.x.dtype == np.float32
    landmark_cols = [i for i, gid in enumerate(w["gene_ids"]) if gid in w["landmark"]]
    cp = [i for i, sig in enumerate(w["sigs"]) if sig["pert_type"] == "trt_cp"]
    block = w["level5"][cp][:, landmark_cols]
    z = (block - block.mean(0)) / block.std(0)
    got = np.concatenate([s.source.x, s.target.x, s.test.x])
    nearest = np.abs(got[:, None, :] - z[None, :, :]).max(axis=2).min(axis=1)
    assert len(got) > 6 and nearest.max() < 1e-4
    assert np.array_equal(s.source.x, s.source.y)


def test_high_apc_subset_and_apc_annotation(release):
    folder, _ = release
    ds = small(folder, high_apc="all", n_source=3, n_target=1)
    prep = ds.prepared()
    s = ds.load(1)
    apc = s.source_annotations["apc"]
    assert apc.shape == (3,) and (apc > 0.5).all()
    every = np.concatenate([s.source.x, s.target.x, s.test.x])
    assert len(every) == int((prep.apc > 0.5).sum())  # test = all the rest of the high-APC pool
    low = small(folder, high_apc="target", n_source=10, n_target=2, n_test=1).load(1)
    assert (low.source_annotations["apc"] <= 0.5).any()  # source from all signatures


def test_balanced_draw_favours_rare_perturbations():
    weights = 1.0 / np.array([9] * 9 + [1])  # nine samples of one compound, one of another
    hits = sum(9 in weighted_sample(np.random.default_rng(i), weights, 1) for i in range(400))
    assert 150 < hits < 250  # about half, not a tenth
    picks = weighted_sample(np.random.default_rng(0), weights, 10)
    assert sorted(picks) == list(range(10))


def test_balanced_split_is_disjoint_and_seeded(release):
    folder, _ = release
    ds = small(folder, balance=True, n_source=4, n_target=4, n_test=4)
    prep = ds.prepared()
    a, b = ds.split_positions(0, prep), ds.split_positions(0, prep)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len(set(np.concatenate(a))) == 12


def test_apc_valuer_end_to_end(release, registry, tmp_path):
    from valbench.api import run
    from valbench.grid import build_experiment
    from valbench.store import open_existing

    folder, _ = release
    spec = f"lincs[path={folder},n_source=8,n_target=3,n_test=3,high_apc=none]"
    exp = build_experiment({"datasets": spec, "corruptions": "features[max=5]", "valuers": "apc,random",
                            "mode": "unsupervised"})
    summary = run(exp, tmp_path / "r.sqlite", device="cpu", registry=registry)
    assert summary.ok == 2
    source_apc = Lincs(path=str(folder), n_source=8, n_target=3, n_test=3, high_apc="none").load(0) \
        .source_annotations["apc"]
    with open_existing(tmp_path / "r.sqlite") as store:
        df = store.results()
        assert set(df["valuer"]) == {"apc", "random"}
        values, truth, kind = store.load_values(df.loc[df["valuer"] == "apc", "values_file"].iloc[0])
    assert np.allclose(values, source_apc) and kind == "noise" and len(truth) == 8


def test_apc_valuer_without_annotation_is_a_clear_error(registry, tmp_path):
    from valbench.api import run
    from valbench.errors import ConfigError
    from valbench.grid import build_experiment

    exp = build_experiment({"datasets": "synthetic", "corruptions": "labels", "valuers": "apc"})
    with pytest.raises(ConfigError, match="needs the per-sample annotation 'apc', which dataset 'synthetic' does not"):
        run(exp, tmp_path / "r.sqlite", device="cpu", registry=registry)
    assert not (tmp_path / "r.sqlite").exists()


def test_lincs_needs_unsupervised_mode(release, registry, tmp_path):
    from valbench.api import run
    from valbench.grid import build_experiment

    folder, _ = release
    exp = build_experiment({"datasets": f"lincs[path={folder},n_source=8,n_target=3,high_apc=none]",
                            "corruptions": "features", "valuers": "random"})
    with pytest.raises(DataError, match="has no labels; value it with --mode unsupervised"):
        run(exp, tmp_path / "r.sqlite", device="cpu", registry=registry)


def test_missing_file_names_file_place_and_url(tmp_path):
    with pytest.raises(DataError, match=rf"lincs: {LEVEL5} not found in {tmp_path}; download https://.*LINCS2020/level5/"):
        Lincs(path=str(tmp_path)).fingerprint()


def test_truncated_gctx_is_reported(release):
    folder, _ = release
    raw = (folder / LEVEL4).read_bytes()
    (folder / LEVEL4).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=rf"{LEVEL4} is truncated, corrupt or not an HDF5/GCTX file"):
        small(folder).load(0)


def test_gctx_without_its_groups_is_reported(release):
    folder, _ = release
    with h5py.File(folder / LEVEL5, "w") as f:
        f.create_dataset("matrix", data=np.zeros((2, 2)))
    with pytest.raises(DataError, match="is not a GCTX file: it has no /0/DATA/0/matrix"):
        small(folder).load(0)


def test_no_landmark_genes(release):
    folder, _ = release
    path = folder / "geneinfo_beta.txt"
    path.write_text(path.read_text().replace("\tlandmark\n", "\tinferred\n"))
    with pytest.raises(DataError, match="marks no gene as feature_space == landmark"):
        small(folder).load(0)


def test_gctx_without_landmark_rows(tmp_path):
    from tests.lincs_files import write_gctx

    folder = tmp_path / "l"
    w = write_release(folder, n_sigs=10)
    write_gctx(folder / LEVEL5, w["level5"].T, [f"9{g}" for g in w["gene_ids"]], [s["sig_id"] for s in w["sigs"]])
    with pytest.raises(DataError, match="level-5 file .* has none of the 12 landmark genes"):
        small(folder).load(0)


def test_no_compound_signatures(tmp_path):
    folder = tmp_path / "l"
    write_release(folder, n_sigs=10, cell_types=("trt_sh",))
    with pytest.raises(DataError, match=r"lists no compound signatures \(pert_type == trt_cp\)"):
        small(folder).load(0)


def test_gctx_without_the_compound_signatures(tmp_path):
    from tests.lincs_files import write_gctx

    folder = tmp_path / "l"
    w = write_release(folder, n_sigs=10)
    write_gctx(folder / LEVEL5, w["level5"].T, w["gene_ids"], [f"OTHER{i}" for i in range(10)])
    with pytest.raises(DataError, match=f"none of the trt_cp signatures of siginfo_beta.txt is a column of {LEVEL5}"):
        small(folder).load(0)


def test_lincs_passes_the_conformance_kit_on_files_in_the_published_format(release):
    from valbench.testing import PASSED, check_plugin

    params = dict(path=str(release[0]), n_source=6, n_target=3, high_apc="none")
    report = {o.check: (o.status, o.detail) for o in check_plugin(Lincs, params, kind="dataset")}
    assert all(status == PASSED for status, _ in report.values()), report


def test_the_autoencoder_widths_are_the_datasets_parameters(release):
    """exp8 uses 978-250-32 (the default), exp9/10 the paper's 978-256-64 (lincs[hidden=256,latent=64])."""
    folder, _ = release
    kw = dict(path=str(folder), n_source=8, n_target=3, n_test=3, high_apc="none")
    default = Lincs(**kw).load(0).learner
    wide = Lincs(**kw, hidden=256, latent=64).load(0).learner
    assert (default.architecture, default.hidden, default.latent) == ("mlp-autoencoder", (250,), 32)
    assert (wide.hidden, wide.latent, wide.in_features) == ((256,), 64, default.in_features)
    assert (wide.lr, wide.epochs, wide.batch_size) == (1e-3, 300, 500)  # the paper's LINCS retraining recipe
