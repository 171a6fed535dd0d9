"""Are generated patients realistic? MMD and a classifier two-sample test against held-out real bags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from recipe_mil.recipes.generate import SyntheticSet


def mmd_rbf(x: np.ndarray, y: np.ndarray, *, bandwidth: float | None = None) -> float:
    """Unbiased squared maximum mean discrepancy with a Gaussian kernel.

    Parameters
    ----------
    x, y
        Samples, shapes (n, d) and (m, d), n, m >= 2.
    bandwidth
        Kernel width; default the median pairwise distance of the pooled sample.

    Returns
    -------
    float
        MMD² (can be slightly negative for identical distributions: it is unbiased).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    z = np.vstack([x, y])
    sq = (z**2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)
    if bandwidth is None:
        bandwidth = float(np.sqrt(np.median(d2[np.triu_indices(len(z), 1)]))) or 1.0
    k = np.exp(-d2 / (2 * bandwidth**2))
    n = len(x)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    m = len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    )


def c2st_accuracy(x: np.ndarray, y: np.ndarray, *, seed: int = 0) -> float:
    """Classifier two-sample test: cross-validated accuracy of telling ``x`` rows from ``y`` rows.

    About 0.5 when the two samples are indistinguishable, 1.0 when separable.
    """
    z = np.vstack([x, y])
    t = np.r_[np.zeros(len(x)), np.ones(len(y))]
    k = int(min(5, len(x), len(y)))
    if k < 2:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, z, t, cv=cv, scoring="balanced_accuracy").mean())


def realism_scores(
    synthetic: Sequence[np.ndarray],
    heldout: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    *,
    max_instances: int = 1500,
    seed: int = 0,
) -> dict[str, float]:
    """Realism of one class's synthetic bags against held-out real bags of that class.

    Parameters
    ----------
    synthetic, heldout, reference
        Bags as instance-feature arrays: generated, real held-out (test) and real training
        (the real-vs-real reference).
    max_instances
        Instances subsampled per side for the instance-level MMD.
    seed
        Random seed.

    Returns
    -------
    dict
        ``mmd_bag`` (MMD² between bag means, synthetic vs held-out), ``mmd_bag_ref`` (real
        training vs held-out), ``mmd_instance`` and ``mmd_instance_ref`` (pooled instances),
        ``c2st`` and ``c2st_ref`` (classifier two-sample balanced accuracy on bag means).
    """
    rng = np.random.default_rng(seed)

    def inst(bags: Sequence[np.ndarray]) -> np.ndarray:
        x = np.concatenate(bags)
        return x[rng.choice(len(x), size=min(max_instances, len(x)), replace=False)]

    def means(bags: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([b.mean(axis=0) for b in bags])

    s, h, r = means(synthetic), means(heldout), means(reference)
    out = {
        "mmd_instance": mmd_rbf(inst(synthetic), inst(heldout)),
        "mmd_instance_ref": mmd_rbf(inst(reference), inst(heldout)),
    }
    ok = len(h) >= 2
    out["mmd_bag"] = mmd_rbf(s, h) if ok and len(s) >= 2 else float("nan")
    out["mmd_bag_ref"] = mmd_rbf(r, h) if ok and len(r) >= 2 else float("nan")
    out["c2st"] = c2st_accuracy(s, h, seed=seed) if ok else float("nan")
    out["c2st_ref"] = c2st_accuracy(r, h, seed=seed) if ok else float("nan")
    return out


def realism_table(
    synthetic_bags: Sequence[np.ndarray],
    synthetic_labels: Sequence[str],
    pool_bags: dict[str, list[np.ndarray]],
    heldout_bags: dict[str, list[np.ndarray]],
    *,
    max_instances: int = 1500,
    seed: int = 0,
) -> list[dict[str, object]]:
    """Realism scores per class: synthetic vs held-out real bags, real pooled vs held-out as reference.

    Parameters
    ----------
    synthetic_bags, synthetic_labels
        Generated bags (instance features) and their classes.
    pool_bags
        Class -> real pooled bags (training patients; for a missing class, its external patients).
    heldout_bags
        Class -> real held-out (test) bags of the target cohort.
    max_instances, seed
        See :func:`realism_scores`.

    Returns
    -------
    list of dict
        One row per class that has synthetic, pooled and at least two held-out bags.
    """
    labels = np.asarray(synthetic_labels)
    rows = []
    for cls in sorted(set(labels)):
        syn = [b for b, lab in zip(synthetic_bags, labels, strict=True) if lab == cls]
        if len(heldout_bags.get(cls, [])) < 2 or not pool_bags.get(cls):
            continue
        scores = realism_scores(syn, heldout_bags[cls], pool_bags[cls], max_instances=max_instances, seed=seed)
        rows.append({"class": cls, "n_synthetic": len(syn), "n_heldout": len(heldout_bags[cls]), **scores})
    return rows


def realism_for_run(
    synthetic: Mapping[str, SyntheticSet],
    pool: ad.AnnData,
    heldout: Mapping[str, list[np.ndarray]],
    *,
    max_instances: int = 1500,
    seed: int = 0,
) -> pd.DataFrame:
    """Realism rows of every method of one run (selected bags only where a selection exists).

    Parameters
    ----------
    synthetic
        Method -> its synthetic patients.
    pool
        The run's pool (the embeddings index-based bags point into, and the real reference bags).
    heldout
        Class -> the instance features of the run's real test patients of that class.
    max_instances, seed
        See :func:`realism_scores`.

    Returns
    -------
    pandas.DataFrame
        One row per method and class.
    """
    pool_bags: dict[str, list[np.ndarray]] = {}
    labels = pool.obs["label"].astype(str).to_numpy()
    for rows in pool.obs.groupby("patient", observed=True).indices.values():
        pool_bags.setdefault(labels[rows[0]], []).append(pool.X[rows])
    out = []
    for method, syn in synthetic.items():
        if syn.selected is not None:
            syn = syn.subset(syn.selected)
        feats = syn.features if syn.features is not None else pool.X
        rows = realism_table(
            [feats[b] for b in syn.bags()], syn.label, pool_bags, heldout, max_instances=max_instances, seed=seed
        )
        out += [{"method": method, **r} for r in rows]
    return pd.DataFrame(out)
