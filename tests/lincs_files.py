"""Small LINCS 2020 release files in the published layout, written by the tests themselves."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

SIGINFO_COLUMNS = [
    "bead_batch", "nearest_dose", "pert_dose", "pert_dose_unit", "pert_idose", "pert_time", "pert_itime",
    "pert_time_unit", "cell_mfc_name", "pert_mfc_id", "nsample", "cc_q75", "ss_ngene", "tas", "pct_self_rank_q25",
    "wt", "median_recall_rank_spearman", "median_recall_rank_wtcs_50", "median_recall_score_spearman",
    "median_recall_score_wtcs_50", "batch_effect_tstat", "batch_effect_tstat_pct", "is_hiq", "qc_pass", "pert_id",
    "sig_id", "pert_type", "cell_iname", "det_wells", "det_plates", "distil_ids", "build_name", "project_code",
    "cmap_name", "is_exemplar_sig", "is_ncs_sig", "is_null_sig",
]
GENEINFO_COLUMNS = ["gene_id", "gene_symbol", "ensembl_id", "gene_title", "gene_type", "src", "feature_space"]


def write_gctx(path: Path, matrix_genes_by_samples: np.ndarray, row_ids: list[str], col_ids: list[str],
               chunk_rows: int = 4) -> None:
    """A GCTX file: rows = genes, columns = samples in the GCT view; stored transposed."""
    with h5py.File(path, "w") as f:
        f.attrs["version"] = "GCTX1.0"
        f.create_dataset("0/DATA/0/matrix", data=np.asarray(matrix_genes_by_samples, np.float32).T,
                         chunks=(min(chunk_rows, len(col_ids)), len(row_ids)), compression="gzip")
        f.create_dataset("0/META/ROW/id", data=np.array(row_ids, dtype="S"))
        f.create_dataset("0/META/COL/id", data=np.array(col_ids, dtype="S"))
        f.create_dataset("0/META/ROW/pr_gene_symbol", data=np.array([f"G{r}" for r in row_ids], dtype="S"))


def write_release(folder: Path, *, n_sigs: int = 24, n_landmark: int = 12, n_other: int = 5, seed: int = 0,
                  cell_types: tuple[str, ...] = ("trt_cp", "trt_sh"), chunk_rows: int = 4) -> dict:
    """level5 / level4 GCTX, siginfo_beta.txt and geneinfo_beta.txt; returns what was written.

    Signatures alternate pert_type over ``cell_types``; each has 1-5 replicates whose
    profiles share a signature-specific pattern (so APC varies from ~0 to ~1).
    """
    g = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    gene_ids = [str(1000 + i) for i in range(n_landmark + n_other)]
    g.shuffle(gene_ids)  # landmark genes are not the first rows
    landmark = set(sorted(gene_ids)[:n_landmark])
    n_genes = len(gene_ids)
    sig_rows, level4_cols, level4_profiles, level5_profiles = [], [], [], []
    for s in range(n_sigs):
        n_rep = int(g.integers(1, 6))
        strength = g.uniform(0.0, 3.0)
        pattern = g.standard_normal(n_genes)
        ids = [f"PLATE{r}_CELL_24H_X{r + 1}_B1:{chr(65 + s % 26)}{s:02d}" for r in range(n_rep)]
        for _ in ids:
            level4_profiles.append(strength * pattern + g.standard_normal(n_genes))
        level4_cols += ids
        level5_profiles.append(strength * pattern + 0.3 * g.standard_normal(n_genes))
        row = {c: "-666" for c in SIGINFO_COLUMNS}
        row.update(pert_id=f"BRD-K{s % 7:08d}", sig_id=f"SIG{s:03d}", pert_type=cell_types[s % len(cell_types)],
                   cell_iname="A375", distil_ids="|".join(ids), cmap_name=f"compound-{s % 7}", nsample=str(n_rep))
        sig_rows.append(row)
    # the level-4 file also holds samples of no listed signature, in shuffled order
    for k in range(3):
        level4_cols.append(f"OTHER_{k}")
        level4_profiles.append(g.standard_normal(n_genes))
    perm = g.permutation(len(level4_cols))
    level4_cols = [level4_cols[i] for i in perm]
    level4 = np.array(level4_profiles)[perm]
    level5 = np.array(level5_profiles)
    sig_ids = [r["sig_id"] for r in sig_rows]
    write_gctx(folder / "level5_beta_trt_cp_n720216x12328.gctx", level5.T, gene_ids, sig_ids, chunk_rows)
    write_gctx(folder / "level4_beta_trt_cp_n1805898x12328.gctx", level4.T, gene_ids, level4_cols, chunk_rows)
    pd.DataFrame(sig_rows, columns=SIGINFO_COLUMNS).to_csv(folder / "siginfo_beta.txt", sep="\t", index=False)
    genes = pd.DataFrame({
        "gene_id": gene_ids, "gene_symbol": [f"G{i}" for i in gene_ids], "ensembl_id": "-666", "gene_title": "t",
        "gene_type": "protein-coding", "src": "NCBI",
        "feature_space": ["landmark" if i in landmark else "best inferred" for i in gene_ids],
    }, columns=GENEINFO_COLUMNS)
    genes.to_csv(folder / "geneinfo_beta.txt", sep="\t", index=False)
    return {"gene_ids": gene_ids, "landmark": landmark, "level4": level4, "level4_cols": level4_cols,
            "level5": level5, "sigs": sig_rows}
