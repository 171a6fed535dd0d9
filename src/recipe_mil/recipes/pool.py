"""Pooling the training patients' instances of one fold (docs/method.md §4.1)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from recipe_mil.io.bags import read_bag, read_bags

logger = logging.getLogger(__name__)

POOL_ROLES = ("train", "external")


def pool_patients(patients: pd.DataFrame, roles: Sequence[str] = POOL_ROLES) -> pd.DataFrame:
    """Select the patients whose instances may be pooled, in sheet order (the leakage rule's gate).

    Raises
    ------
    ValueError
        If ``roles`` names ``val`` or ``test``, or no patient has one of ``roles``.
    """
    forbidden = {"val", "test"} & set(roles)
    if forbidden:
        raise ValueError(f"leakage rule: roles {sorted(forbidden)} may never enter a pool")
    sel = patients[patients["role"].isin(roles)].reset_index(drop=True)
    if sel.empty:
        raise ValueError(f"no patients with roles {list(roles)} to pool")
    return sel


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
    sel = pool_patients(patients, roles)
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
        Float32: a copy with the external rows aligned (target rows unchanged), or ``x``
        itself when there is nothing to align (never modified in place).
    """
    if mode not in ALIGN_MODES:
        raise ValueError(f"align_external must be one of {ALIGN_MODES}, got {mode!r}")
    ext, tgt = cohorts == "external", cohorts == "target"
    if mode == "none" or not ext.any() or not tgt.any():
        return np.asarray(x, dtype=np.float32)  # nothing to align: no copy of a pool that may be most of memory
    out = np.array(x, dtype=np.float32, copy=True)
    m_t, m_e = out[tgt].mean(axis=0), out[ext].mean(axis=0)
    if mode == "centre":
        out[ext] = out[ext] - m_e + m_t
    else:
        s_t, s_e = out[tgt].std(axis=0), out[ext].std(axis=0)
        out[ext] = (out[ext] - m_e) / np.where(s_e > 0, s_e, 1.0) * s_t + m_t
    return out


@dataclass
class Projection:
    """The map from pooled embeddings to the GMM's input space.

    Attributes
    ----------
    mean, scale
        Per-feature centre and scale (scale 1 without standardisation).
    components
        Principal axes as columns, shape (d, n_pcs), or None to keep every feature.
    explained_variance
        Variance along each kept axis (of the standardised features).
    """

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray | None
    explained_variance: np.ndarray | None = None

    def transform(self, x: np.ndarray, *, dtype: type = np.float64, chunk_rows: int = 65536) -> np.ndarray:
        """Standardise and project rows, chunk by chunk, in ``dtype`` arithmetic.

        With components, the standardisation is folded into the projection matrix
        (``x @ (V / scale) - (mean / scale) @ V``): one matrix product per chunk.
        """
        if self.components is None:
            return ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale).astype(dtype, copy=False)
        weights = (self.components / self.scale[:, None]).astype(dtype)
        offset = ((self.mean / self.scale) @ self.components).astype(dtype)
        out = np.empty((len(x), weights.shape[1]), dtype=dtype)
        for s in range(0, len(x), chunk_rows):
            out[s : s + chunk_rows] = np.asarray(x[s : s + chunk_rows], dtype=dtype) @ weights - offset
        return out


def fit_projection(chunks: Iterable[np.ndarray], *, standardize: bool, n_pcs: int | None) -> Projection:
    """Fit standardisation and PCA in one streaming pass over row chunks.

    Only first and second moments are accumulated (float64 totals of float32 products,
    centred on the first chunk's mean against cancellation), so memory is O(d^2) whatever
    the number of rows. PCA is the exact eigendecomposition of the (standardised) covariance;
    each axis's sign is fixed so that its largest loading is positive.

    Parameters
    ----------
    chunks
        Row blocks of the rows the statistics are fitted on (any number, any sizes).
    standardize
        Centre and scale each feature to unit variance (population sd), else centre only.
    n_pcs
        Number of principal components, or None/0 to keep all features.

    Returns
    -------
    Projection
        The fitted map.

    Raises
    ------
    ValueError
        If there are no rows.
    """
    n, shift, s1, s2 = 0, None, None, None
    for chunk in chunks:
        x = np.asarray(chunk, dtype=np.float32)
        if not len(x):
            continue
        if shift is None:
            shift = x.mean(axis=0, dtype=np.float64)
            s1 = np.zeros(x.shape[1])
            s2 = np.zeros((x.shape[1], x.shape[1]))
        c = x - shift.astype(np.float32)
        n += len(c)
        s1 += c.sum(axis=0, dtype=np.float64)
        s2 += (c.T @ c).astype(np.float64)
    if shift is None:
        raise ValueError("no rows to fit the GMM space on")
    m = s1 / n
    cov = s2 / n - np.outer(m, m)
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    scale = np.where(sd > 0, sd, 1.0) if standardize else np.ones_like(sd)
    d = len(shift)
    if not n_pcs or n_pcs >= d:
        return Projection(mean=shift + m, scale=scale, components=None)
    evals, evecs = np.linalg.eigh(cov / np.outer(scale, scale))
    top = np.argsort(evals)[::-1][:n_pcs]
    comps = evecs[:, top]
    comps *= np.where(comps[np.abs(comps).argmax(axis=0), np.arange(n_pcs)] < 0, -1.0, 1.0)
    return Projection(mean=shift + m, scale=scale, components=comps, explained_variance=evals[top])


def row_chunks(x: np.ndarray, rows: np.ndarray | None = None, *, chunk_rows: int = 65536) -> Iterator[np.ndarray]:
    """Yield blocks of ``x`` (only the rows of the boolean mask ``rows`` when given)."""
    idx = np.arange(len(x)) if rows is None else np.flatnonzero(rows)
    for s in range(0, len(idx), chunk_rows):
        block = idx[s : s + chunk_rows]
        yield x[block[0] : block[-1] + 1] if block[-1] - block[0] + 1 == len(block) else x[block]


def bag_chunks(paths: Sequence[str], *, chunk_rows: int = 262144) -> Iterator[np.ndarray]:
    """Yield the features of bag files in file order, about ``chunk_rows`` rows at a time.

    Only one block of bags is in memory at once: the streaming counterpart of
    :func:`recipe_mil.io.bags.read_bags` for pools larger than memory.
    """
    block: list[np.ndarray] = []
    rows = 0
    for path in paths:
        block.append(read_bag(path).features)
        rows += len(block[-1])
        if rows >= chunk_rows:
            yield np.concatenate(block)
            block, rows = [], 0
    if block:
        yield np.concatenate(block)


def gmm_space(x: np.ndarray, *, standardize: bool, n_pcs: int | None, fit_rows: np.ndarray | None = None) -> np.ndarray:
    """Optionally standardise and PCA-reduce the pool before the GMM.

    Parameters
    ----------
    x
        Pool embeddings.
    standardize
        Centre and scale each feature to unit variance.
    n_pcs
        Number of principal components, or None/0 to keep all features.
    fit_rows
        Boolean mask of the rows the statistics are fitted on (default: all); the
        transform is applied to every row.

    Returns
    -------
    numpy.ndarray
        The transformed pool, float64.
    """
    projection = fit_projection(row_chunks(x, fit_rows), standardize=standardize, n_pcs=n_pcs)
    return projection.transform(x)
