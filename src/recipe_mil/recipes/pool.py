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

POOL_ROLES = ("train",)


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


def gmm_space(
    x: np.ndarray, *, standardize: bool, n_pcs: int | None, seed: int
) -> tuple[np.ndarray, dict[str, object]]:
    """Optionally standardise and PCA-reduce the pool before the GMM (fitted on the pool only).

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

    Returns
    -------
    z
        The transformed pool, float64.
    params
        ``mean``, ``scale`` and ``components`` so other instances can be mapped the same way.
    """
    z = np.asarray(x, dtype=np.float64)
    mean = z.mean(axis=0) if standardize else np.zeros(z.shape[1])
    scale = z.std(axis=0) if standardize else np.ones(z.shape[1])
    scale = np.where(scale > 0, scale, 1.0)
    z = (z - mean) / scale
    params: dict[str, object] = {"mean": mean, "scale": scale, "components": None}
    if n_pcs and n_pcs < z.shape[1]:
        pca = PCA(n_components=n_pcs, random_state=seed).fit(z)
        params["components"] = pca.components_
        params["pca_mean"] = pca.mean_
        z = pca.transform(z)
    return z, params
