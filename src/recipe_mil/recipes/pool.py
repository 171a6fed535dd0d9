"""Pooling the training patients' instances of one fold (DESIGN §4 step 1)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from recipe_mil.io.bags import read_bags

logger = logging.getLogger(__name__)

POOL_ROLES = ("train", "external")


def build_pool(
    patients: pd.DataFrame, bag_paths: Mapping[str, str], *, roles: Sequence[str] = POOL_ROLES
) -> ad.AnnData:
    """Stack the instances of the patients whose role is in ``roles`` into an AnnData.

    Parameters
    ----------
    patients
        Columns ``patient, label, cohort, role`` (from :func:`recipe_mil.splits.scenario_patients`).
    bag_paths
        Patient -> bag file.
    roles
        Roles admitted to the pool. Validation and test patients are refused whatever
        is passed: that is the leakage rule.

    Returns
    -------
    anndata.AnnData
        ``X`` float32 embeddings; ``obs`` columns ``patient, label, cohort, instance_id``.

    Raises
    ------
    ValueError
        If ``roles`` names ``val`` or ``test``, or no patient is selected.
    """
    forbidden = {"val", "test"} & set(roles)
    if forbidden:
        raise ValueError(f"leakage rule: roles {sorted(forbidden)} may never enter a pool")
    sel = patients[patients["role"].isin(roles)].reset_index(drop=True)
    if sel.empty:
        raise ValueError(f"no patients with roles {list(roles)} to pool")
    features, offsets, bags = read_bags([bag_paths[p] for p in sel["patient"]])
    sizes = np.diff(offsets)
    obs = pd.DataFrame(
        {
            "patient": np.repeat(sel["patient"].to_numpy(), sizes),
            "label": np.repeat(sel["label"].to_numpy(), sizes),
            "cohort": np.repeat(sel["cohort"].to_numpy(), sizes),
            "instance_id": np.concatenate([b.instance_ids for b in bags]),
        }
    )
    obs.index = [f"{p}:{i}" for p, i in zip(obs["patient"], obs["instance_id"], strict=True)]
    for col in ("patient", "label", "cohort"):
        obs[col] = obs[col].astype("category")
    logger.info("pooled %d instances of %d patients (d=%d)", len(obs), len(sel), features.shape[1])
    return ad.AnnData(X=features, obs=obs)


ALIGN_MODES = ("none", "centre", "standardise")


def align_external(x: np.ndarray, cohorts: np.ndarray, mode: str) -> np.ndarray:
    """Align the external cohort's features to the target cohort's, per feature.

    Parameters
    ----------
    x
        Pool embeddings (target and external rows).
    cohorts
        Cohort of each row.
    mode
        ``none``; ``centre`` (shift external rows so their mean matches the target rows');
        ``standardise`` (also match the per-feature standard deviation). Statistics come
        from the pool's rows only (training patients), never from held-out patients.

    Returns
    -------
    numpy.ndarray
        A float32 copy with the external rows aligned (target rows unchanged).
    """
    if mode not in ALIGN_MODES:
        raise ValueError(f"align_external must be one of {ALIGN_MODES}, got {mode!r}")
    out = np.array(x, dtype=np.float32, copy=True)
    ext, tgt = cohorts == "external", cohorts == "target"
    if mode == "none" or not ext.any() or not tgt.any():
        return out
    m_t, m_e = out[tgt].mean(axis=0), out[ext].mean(axis=0)
    if mode == "centre":
        out[ext] = out[ext] - m_e + m_t
    else:
        s_t, s_e = out[tgt].std(axis=0), out[ext].std(axis=0)
        out[ext] = (out[ext] - m_e) / np.where(s_e > 0, s_e, 1.0) * s_t + m_t
    return out


def gmm_space(
    x: np.ndarray, *, standardize: bool, n_pcs: int | None, seed: int, fit_rows: np.ndarray | None = None
) -> np.ndarray:
    """Optionally standardise and PCA-reduce the pool before the GMM.

    Parameters
    ----------
    x
        Pool embeddings.
    standardize
        Centre and scale each feature to unit variance.
    n_pcs
        Number of principal components, or None/0 to keep all features.
    seed
        PCA random state.
    fit_rows
        Boolean mask of the rows the statistics are fitted on (default: all); the
        transform is applied to every row.

    Returns
    -------
    numpy.ndarray
        The transformed pool, float64.
    """
    z = np.asarray(x, dtype=np.float64)
    fit = z if fit_rows is None else z[fit_rows]
    mean = fit.mean(axis=0) if standardize else np.zeros(z.shape[1])
    scale = fit.std(axis=0) if standardize else np.ones(z.shape[1])
    scale = np.where(scale > 0, scale, 1.0)
    z = (z - mean) / scale
    if n_pcs and n_pcs < z.shape[1]:
        pca = PCA(n_components=n_pcs, random_state=seed).fit((fit - mean) / scale)
        z = pca.transform(z)
    return z
