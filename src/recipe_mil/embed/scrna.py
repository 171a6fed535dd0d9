"""Per-patient bags of cell embeddings from an ``.h5ad`` file (docs/method.md §1, modality ``scrna``).

The embedding is fitted on the target cohort only, without labels: QC (cells with too
few genes, genes seen in too few target cells), ``normalize_total``, ``log1p``, highly
variable genes (scanpy, ``flavor="seurat"``), scaling and PCA. An external cohort is
projected into the same space with the target's genes, scaling statistics and principal
components. Alternatively an existing ``obsm`` embedding (``X_scVI``, ``X_pca``...) is
used as is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from recipe_mil.io.bags import instance_truth, write_bag
from recipe_mil.io.h5ad import _as_str_values, h5ad_patients

logger = logging.getLogger("recipe_mil.embed.scrna")

_CLIP = 10.0  # scaled values are clipped to [-_CLIP, _CLIP]


@dataclass
class ScrnaEmbedParams:
    """Options of the scRNA-seq embedding.

    Attributes
    ----------
    patient_key
        ``obs`` column holding the patient id.
    label_key
        ``obs`` column holding the class label, checked against the sample sheet
        (None: no check).
    layer
        Layer holding raw counts; None uses ``X``.
    obsm_key
        If set (e.g. ``"X_scVI"`` or ``"X_pca"``), skip preprocessing and use this
        embedding as is.
    min_genes
        Cells with fewer detected genes are removed.
    min_cells
        Genes detected in fewer target cells are removed.
    target_sum
        Total counts per cell after ``normalize_total``.
    n_top_genes
        Number of highly variable genes.
    n_pcs
        Number of principal components (the embedding width).
    scale
        Scale every gene to unit variance (clipped at +-10) before PCA; otherwise only centre.
    seed
        Seed of the PCA solver.
    """

    patient_key: str = "patient"
    label_key: str | None = "label"
    layer: str | None = None
    obsm_key: str | None = None
    min_genes: int = 50
    min_cells: int = 3
    target_sum: float = 1e4
    n_top_genes: int = 300
    n_pcs: int = 30
    scale: bool = True
    seed: int = 0


def _check_keys(adata: ad.AnnData, params: ScrnaEmbedParams, cohort: str) -> None:
    if params.patient_key not in adata.obs.columns:
        raise ValueError(
            f"{cohort} cohort: obs has no patient column {params.patient_key!r} (columns: {list(adata.obs.columns)})"
        )
    if params.obsm_key is not None:
        if params.obsm_key not in adata.obsm:
            raise ValueError(f"{cohort} cohort: obsm has no key {params.obsm_key!r} (keys: {list(adata.obsm.keys())})")
    elif params.layer is not None and params.layer not in adata.layers:
        raise ValueError(f"{cohort} cohort: no layer {params.layer!r} (layers: {list(adata.layers.keys())})")


def _patients(adata: ad.AnnData, params: ScrnaEmbedParams) -> pd.Series:
    return _as_str_values(adata.obs[params.patient_key].to_numpy()).set_axis(adata.obs_names)


def _split_by_patient(
    features: np.ndarray, barcodes: np.ndarray, patients: pd.Series
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    groups = pd.Series(np.arange(len(patients))).groupby(patients.to_numpy(), sort=False, dropna=True).indices
    return {
        str(patient): (np.ascontiguousarray(features[idx], dtype=np.float32), barcodes[idx])
        for patient, idx in groups.items()
    }


def _counts(adata: ad.AnnData, params: ScrnaEmbedParams, cohort: str) -> ad.AnnData:
    """Return a lean AnnData of float32 counts with only the patient column (cells without a patient dropped)."""
    patients = _patients(adata, params)
    keep = patients.notna().to_numpy()
    if not keep.all():
        logger.warning("%s cohort: dropping %d cells without a %r", cohort, int((~keep).sum()), params.patient_key)
    x = adata.layers[params.layer] if params.layer is not None else adata.X
    if x is None:
        raise ValueError(f"{cohort} cohort: X is empty; give the counts layer")
    x = x[keep]
    x = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else np.asarray(x, dtype=np.float32)
    values = x.data if sp.issparse(x) else x
    if values.size and values.min() < 0:
        raise ValueError(
            f"{cohort} cohort: {'layer ' + repr(params.layer) if params.layer else 'X'} has negative values; "
            "raw counts are expected (or set obsm_key to use an existing embedding)"
        )
    sample = values.ravel()[:100_000]
    if sample.size and not np.allclose(sample, np.round(sample)):
        logger.warning("%s cohort: the counts are not integers; is this really raw counts?", cohort)
    return ad.AnnData(
        X=x,
        obs=pd.DataFrame({"patient": patients[keep].to_numpy()}, index=adata.obs_names[keep]),
        var=pd.DataFrame(index=adata.var_names.copy()),
    )


def _dense(x: np.ndarray | sp.spmatrix) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float32)


def _fit_pca(z: np.ndarray, n_comp: int, seed: int) -> tuple[np.ndarray, PCA]:
    """Fit a PCA and return the embedding and the fitted model.

    An eigendecomposition of the genes' covariance (scikit-learn >= 1.5) is exact,
    deterministic and fast when cells outnumber genes; otherwise a full SVD. BLAS runs on one
    thread (:func:`_one_blas_thread`), so the embedding has the same bits whatever threads the job has.
    """
    with _one_blas_thread():
        if z.shape[0] >= z.shape[1]:
            try:
                pca = PCA(n_components=n_comp, svd_solver="covariance_eigh", random_state=seed)
                return pca.fit_transform(z), pca
            except ValueError:  # scikit-learn < 1.5 lacks this solver
                pass
        pca = PCA(n_components=n_comp, svd_solver="full", random_state=seed)
        return pca.fit_transform(z), pca


def _one_blas_thread() -> threadpool_limits:
    """Return a context that limits BLAS to one thread.

    A multi-threaded product sums in another order on 1 and 2 threads (the bags of a run on 1 core and one on 2
    differed by 2e-6), and the PCA takes a few seconds either way.
    """
    return threadpool_limits(limits=1, user_api="blas")


def embed_scrna(
    target: ad.AnnData,
    params: ScrnaEmbedParams,
    *,
    external: ad.AnnData | None = None,
    sources: Mapping[str, str] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Embed every cell and group the cells by patient.

    Parameters
    ----------
    target
        The target cohort (raw counts in ``X`` or ``params.layer``). All preprocessing
        statistics are fitted on these cells, without labels.
    params
        Embedding options.
    external
        An external cohort, projected into the target's space (same genes, scaling
        statistics and principal components); only genes present in both cohorts are used.
    sources
        Cohort (``target``, ``external``) -> where its cells came from (a file name), named in
        error messages.

    Returns
    -------
    dict[str, tuple[numpy.ndarray, numpy.ndarray]]
        Patient -> (float32 features of shape (n_cells, d), the cells' barcodes), target
        patients first, each cohort in order of first appearance.

    Raises
    ------
    ValueError
        If a key, layer or ``obsm`` entry is missing, a patient has zero cells after QC,
        a patient id occurs in both cohorts, or the cohorts share no genes.
    """
    cohorts = [("target", target)] + ([("external", external)] if external is not None else [])
    for name, adata in cohorts:
        _check_keys(adata, params, name)
    if external is not None:
        shared = set(_patients(target, params).dropna()) & set(_patients(external, params).dropna())
        if shared:
            raise ValueError(f"patient id(s) in both the target and the external cohort: {sorted(shared)}")

    if params.obsm_key is not None:
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        widths = set()
        for name, adata in cohorts:
            feats = np.asarray(adata.obsm[params.obsm_key], dtype=np.float32)
            widths.add(feats.shape[1])
            logger.info("%s cohort: using obsm[%r] (%d cells x %d)", name, params.obsm_key, *feats.shape)
            out.update(_split_by_patient(feats, np.asarray(adata.obs_names, dtype=object), _patients(adata, params)))
        if len(widths) > 1:
            raise ValueError(f"obsm[{params.obsm_key!r}] has different widths in the two cohorts: {sorted(widths)}")
        return out

    tgt = _counts(target, params, "target")
    ext = _counts(external, params, "external") if external is not None else None
    if ext is not None:
        genes = tgt.var_names.intersection(ext.var_names, sort=False)
        if len(genes) == 0:
            raise ValueError("the target and the external cohort share no genes")
        if len(genes) < tgt.n_vars or len(genes) < ext.n_vars:
            logger.warning(
                "using the %d genes shared by both cohorts (target %d, external %d)", len(genes), tgt.n_vars, ext.n_vars
            )
        tgt, ext = tgt[:, genes].copy(), ext[:, genes].copy()

    for name, a in (("target", tgt), ("external", ext)):
        if a is None:
            continue
        n0, before = a.n_obs, list(pd.unique(a.obs["patient"]))
        sc.pp.filter_cells(a, min_genes=params.min_genes)
        logger.info("%s cohort: %d of %d cells kept (min_genes=%d)", name, a.n_obs, n0, params.min_genes)
        empty = sorted(set(before) - set(a.obs["patient"]))
        if empty:
            where = f" ({sources[name]})" if sources and name in sources else ""
            raise ValueError(
                f"{name} cohort{where}: patient(s) {empty} have zero cells after QC "
                f"(every cell has fewer than min_genes={params.min_genes} detected genes)"
            )
    g0 = tgt.n_vars
    sc.pp.filter_genes(tgt, min_cells=params.min_cells)
    if tgt.n_vars == 0:
        raise ValueError(f"no gene is detected in min_cells={params.min_cells} target cells")
    logger.info("%d of %d genes kept (min_cells=%d in the target cohort)", tgt.n_vars, g0, params.min_cells)
    if ext is not None:
        ext = ext[:, tgt.var_names].copy()

    for a in (tgt, ext):
        if a is not None:
            sc.pp.normalize_total(a, target_sum=params.target_sum)
            sc.pp.log1p(a)
    n_top = min(params.n_top_genes, tgt.n_vars)
    sc.pp.highly_variable_genes(tgt, flavor="seurat", n_top_genes=n_top)
    hvg = tgt.var_names[tgt.var["highly_variable"].to_numpy()]
    logger.info("%d highly variable genes (flavor='seurat', fitted on the target cohort)", len(hvg))

    x_t = _dense(tgt[:, hvg].X)
    mean = x_t.mean(axis=0)
    sd = x_t.std(axis=0, ddof=1) if x_t.shape[0] > 1 else np.ones_like(mean)
    sd[~(sd > 0)] = 1.0

    def transform(x: np.ndarray) -> np.ndarray:
        x = x - mean
        if params.scale:
            x = np.clip(x / sd, -_CLIP, _CLIP)
        return x.astype(np.float32, copy=False)

    z_t = transform(x_t)
    n_comp = min(params.n_pcs, z_t.shape[0], z_t.shape[1])
    emb_t, pca = _fit_pca(z_t, n_comp, params.seed)
    logger.info(
        "PCA on %d target cells x %d genes: %d components, %.1f%% of the variance",
        *z_t.shape,
        n_comp,
        100 * float(pca.explained_variance_ratio_.sum()),
    )
    out = _split_by_patient(emb_t, np.asarray(tgt.obs_names, dtype=object), tgt.obs["patient"])
    if ext is not None:
        with _one_blas_thread():
            emb_e = pca.transform(transform(_dense(ext[:, hvg].X)))
        logger.info("external cohort: %d cells projected into the target's space", emb_e.shape[0])
        out.update(_split_by_patient(emb_e, np.asarray(ext.obs_names, dtype=object), ext.obs["patient"]))
    return out


def _read_patients(
    path: str | os.PathLike[str], ids: list[str], names: Mapping[str, str], params: ScrnaEmbedParams
) -> ad.AnnData:
    """Read the cells of the given patients (ids in the file) from an .h5ad file, checking that each is present."""
    present = set(h5ad_patients(path, params.patient_key))
    missing = [i if names[i] == i else f"{names[i]} (as {i!r})" for i in ids if i not in present]
    if missing:
        raise ValueError(f"{path}: patient(s) not found in obs[{params.patient_key!r}]: {missing}")
    backed = ad.read_h5ad(path, backed="r")
    try:
        mask = _patients(backed, params).isin(set(ids)).to_numpy()
        adata = backed[mask].to_memory()
    finally:
        backed.file.close()
    logger.info("%s: %d cells of %d patients", path, adata.n_obs, len(ids))
    return adata


def _check_labels(
    adata: ad.AnnData, labels: Mapping[str, str], names: Mapping[str, str], params: ScrnaEmbedParams, path: str
) -> None:
    """Check the file's label column against the sheet (``labels`` and ``names`` keyed by h5ad id)."""
    if params.label_key is None:
        return
    if params.label_key not in adata.obs.columns:
        raise ValueError(f"{path}: obs has no label column {params.label_key!r} (columns: {list(adata.obs.columns)})")
    df = pd.DataFrame(
        {
            "patient": _patients(adata, params).to_numpy(),
            "label": _as_str_values(adata.obs[params.label_key].to_numpy()),
        }
    ).dropna()
    found = df.groupby("patient", sort=False)["label"].unique()
    for h5ad_id, expected in labels.items():
        if h5ad_id not in found.index:
            continue
        in_file = sorted(str(v) for v in found[h5ad_id])
        if in_file != [str(expected)]:
            name = names[h5ad_id]
            alias = "" if name == h5ad_id else f" ({params.patient_key} {h5ad_id!r} in the file)"
            raise ValueError(
                f"patient {name!r}{alias}: the sample sheet says label {expected!r} but {path} "
                f"obs[{params.label_key!r}] says {in_file}"
            )


def _read_cohort(path: str | os.PathLike[str], rows: pd.DataFrame, params: ScrnaEmbedParams) -> ad.AnnData:
    """Read a cohort's sheet patients, check their labels and rename them to the sheet's patient ids."""
    ids = list(rows["h5ad_id"])
    names = dict(zip(rows["h5ad_id"], rows["patient"], strict=True))
    adata = _read_patients(path, ids, names, params)
    _check_labels(adata, dict(zip(rows["h5ad_id"], rows["label"], strict=True)), names, params, str(path))
    adata.obs[params.patient_key] = _patients(adata, params).map(names).to_numpy()
    return adata


def write_scrna_bags(
    h5ad: str | os.PathLike[str],
    sheet: pd.DataFrame,
    out_paths: Mapping[str, str | os.PathLike[str]],
    params: ScrnaEmbedParams,
    *,
    external_h5ad: str | os.PathLike[str] | None = None,
    encoder_name: str = "scanpy-pca",
    truth_columns: Sequence[str] = (),
) -> None:
    """Embed the sheet's patients and write one bag file per patient.

    Parameters
    ----------
    h5ad
        The target cohort's ``.h5ad`` file.
    sheet
        Sample sheet with columns ``patient`` and ``label``, optionally ``cohort`` (default
        ``target``; rows of cohort ``external`` are read from ``external_h5ad``) and
        ``path`` (the patient's id in the file's ``obs[patient_key]``; default: ``patient``).
        Only the sheet's patients are read and embedded.
    out_paths
        Sheet patient -> bag file to write.
    params
        Embedding options.
    external_h5ad
        The external cohort's ``.h5ad`` file, needed when the sheet has external rows.
    encoder_name
        Stored as the bags' ``encoder`` attribute.
    truth_columns
        ``obs`` columns carried into every bag as per-cell ground truth (``truth_{column}``
        datasets, see :mod:`recipe_mil.io.bags`), e.g. ``("cell_type", "state")`` of a simulated
        cohort; empty for real data.

    Raises
    ------
    ValueError
        If the sheet lacks a column or has duplicate patients, a patient has no output
        path or is missing from its file, a label disagrees with the file's label column,
        or :func:`embed_scrna` fails.
    """
    missing_cols = [c for c in ("patient", "label") if c not in sheet.columns]
    if missing_cols:
        raise ValueError(f"sample sheet lacks column(s) {missing_cols} (columns: {list(sheet.columns)})")
    patient = sheet["patient"].astype(str)
    h5ad_id = patient
    if "path" in sheet.columns:
        given = sheet["path"].astype("string").str.strip()
        h5ad_id = given.where(given.notna() & (given != ""), patient).astype(str)
    cohort = sheet["cohort"].astype("string").fillna("target") if "cohort" in sheet.columns else "target"
    sheet = pd.DataFrame(
        {"patient": patient, "label": sheet["label"].astype(str), "h5ad_id": h5ad_id, "cohort": cohort}
    ).reset_index(drop=True)
    sheet["cohort"] = sheet["cohort"].replace("", "target").astype(str)
    dup = sorted(set(sheet.loc[sheet["patient"].duplicated(), "patient"]))
    if dup:
        raise ValueError(f"sample sheet: duplicate patient(s) {dup}")
    dup = sorted(set(sheet.loc[sheet[["cohort", "h5ad_id"]].duplicated(), "h5ad_id"]))
    if dup:
        raise ValueError(f"sample sheet: several patients point to the same {params.patient_key} in the file: {dup}")
    no_path = [p for p in sheet["patient"] if p not in out_paths]
    if no_path:
        raise ValueError(f"no output path for patient(s) {no_path}")
    is_ext = (sheet["cohort"] == "external").to_numpy()
    if is_ext.any() and external_h5ad is None:
        raise ValueError(
            f"sample sheet has external patient(s) {list(sheet.loc[is_ext, 'patient'])} but no external_h5ad was given"
        )
    if is_ext.all():
        raise ValueError("sample sheet has no target-cohort patient to fit the embedding on")

    target = _read_cohort(h5ad, sheet[~is_ext], params)
    external = None
    if is_ext.any():
        assert external_h5ad is not None
        external = _read_cohort(external_h5ad, sheet[is_ext], params)

    sources = {"target": str(h5ad), "external": str(external_h5ad)}
    truth = None
    if truth_columns:
        parts = [(name, a) for name, a in (("target", target), ("external", external)) if a is not None]
        for name, a in parts:
            absent = [c for c in truth_columns if c not in a.obs.columns]
            if absent:
                raise ValueError(f"{sources[name]}: obs has no truth column(s) {absent}")
        truth = pd.concat([a.obs[list(truth_columns)].astype(str) for _, a in parts])
    embeddings = embed_scrna(target, params, external=external, sources=sources)
    for row in sheet.itertuples():
        features, barcodes = embeddings[row.patient]
        write_bag(
            out_paths[row.patient],
            features,
            barcodes,
            patient=row.patient,
            label=row.label,
            encoder=encoder_name,
            truth=instance_truth(truth, barcodes, source=sources[row.cohort]),
        )
    logger.info("wrote %d bags (encoder %r)", len(sheet), encoder_name)
