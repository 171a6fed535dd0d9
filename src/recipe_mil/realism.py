"""Are generated patients realistic? MMD and a classifier two-sample test against held-out real bags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from recipe_mil.recipes.generate import SyntheticSet


def median_bandwidth(x: np.ndarray) -> float:
    """Median pairwise Euclidean distance of the rows of ``x`` (1.0 if there is none or it is 0)."""
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return 1.0
    sq = (x**2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
    return float(np.sqrt(np.median(d2[np.triu_indices(len(x), 1)]))) or 1.0


def mmd_rbf(x: np.ndarray, y: np.ndarray, *, bandwidth: float | None = None) -> float:
    """Unbiased squared maximum mean discrepancy with a Gaussian kernel.

    Parameters
    ----------
    x, y
        Samples, shapes (n, d) and (m, d), n, m >= 2.
    bandwidth
        Kernel width. Comparisons against one reference must share it (see
        :func:`realism_scores`); the default, the median pairwise distance of the pooled
        sample, changes with each ``x`` and makes their MMDs incomparable.

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
        bandwidth = median_bandwidth(z)
    k = np.exp(-d2 / (2 * bandwidth**2))
    n = len(x)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    m = len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    )


C2ST_RIDGE = 1.0
"""Ridge penalty of the C2ST classifier per standardised feature (the penalty is ``C2ST_RIDGE * d``)."""


def _ridge_balanced_accuracy(z: np.ndarray, t: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean per-fold balanced accuracy of a ridge classifier (least squares on +-1 targets).

    Each fold standardises the features with its training rows and solves the ridge problem in
    its dual form (training rows x training rows), which is cheap for the few bags a C2ST sees.
    """
    accs = []
    for tr, te in folds:
        mu = z[tr].mean(0)
        sd = z[tr].std(0)
        sd[sd == 0] = 1.0
        a, b = (z[tr] - mu) / sd, (z[te] - mu) / sd
        y = np.where(t[tr] == 1, 1.0, -1.0)
        c = y.mean()
        w = np.linalg.solve(a @ a.T + C2ST_RIDGE * z.shape[1] * np.eye(len(a)), y - c)
        pred = (b @ (a.T @ w) + c) > 0
        truth = t[te] == 1
        accs.append(0.5 * (pred[truth].mean() + (~pred[~truth]).mean()))
    return float(np.mean(accs))


def c2st(x: np.ndarray, y: np.ndarray, *, permutations: int = 0, seed: int = 0) -> tuple[float, float]:
    """Classifier two-sample test: cross-validated balanced accuracy of telling ``x`` rows from ``y`` rows.

    About 0.5 when the two samples are indistinguishable, 1.0 when separable. With few rows the
    accuracy of two identical distributions scatters widely around 0.5 (sd about 0.12 for 6 vs
    10 rows), so the point value alone says little: the permutation p-value compares it with
    the accuracies reached after shuffling which rows are which.

    The classifier is a ridge classifier on standardised features (penalty ``C2ST_RIDGE`` per
    feature), solved in closed form: a test with 50 permutations costs milliseconds, where an
    iterative logistic regression took about a second.

    Parameters
    ----------
    x, y
        The two samples (rows).
    permutations
        Label permutations for the p-value (0: none, p is NaN).
    seed
        Seed of the folds and permutations.

    Returns
    -------
    accuracy
        Balanced accuracy averaged over stratified folds (NaN with fewer than 2 rows on a side).
    p_value
        ``(1 + #permuted accuracies >= accuracy) / (1 + permutations)``, or NaN; every permutation
        re-draws its stratified folds from its shuffled labels, as the observed labels do.
    """
    k = int(min(5, len(x), len(y)))
    if k < 2:
        return float("nan"), float("nan")
    z = np.vstack([x, y]).astype(np.float64)
    t = np.r_[np.zeros(len(x)), np.ones(len(y))]
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    acc = _ridge_balanced_accuracy(z, t, list(cv.split(z, t)))
    if permutations <= 0:
        return acc, float("nan")
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(permutations):
        tp = rng.permutation(t)
        hits += _ridge_balanced_accuracy(z, tp, list(cv.split(z, tp))) >= acc
    return acc, (1 + hits) / (1 + permutations)


def c2st_accuracy(x: np.ndarray, y: np.ndarray, *, seed: int = 0) -> float:
    """Cross-validated balanced accuracy of :func:`c2st` without a p-value."""
    return c2st(x, y, seed=seed)[0]


@dataclass
class HeldOut:
    """The real held-out bags of one class, prepared once as the reference of every comparison.

    Attributes
    ----------
    means
        Bag means, shape (n_bags, d).
    instances
        A seeded subsample of their instances.
    bandwidth_bag, bandwidth_instance
        Kernel widths (median pairwise distances of ``means`` and ``instances``): every set
        compared with these bags uses the same kernel, so their MMDs can be ranked.
    """

    means: np.ndarray
    instances: np.ndarray
    bandwidth_bag: float
    bandwidth_instance: float
    c2st_cache: dict[tuple, tuple[float, float]] = field(default_factory=dict, repr=False, compare=False)

    def c2st_against(self, x: np.ndarray, *, permutations: int, seed: int) -> tuple[float, float]:
        """:func:`c2st` of ``x`` against these bags' means, computed once per (x, permutations, seed).

        The real-vs-real reference of a class is the same for every method of a run; with permutations it is most
        of the realism step's cost, so it is kept here (the result is deterministic in its inputs).
        """
        key = (x.shape, x.tobytes(), permutations, seed)
        if key not in self.c2st_cache:
            self.c2st_cache[key] = c2st(x, self.means, permutations=permutations, seed=seed)
        return self.c2st_cache[key]

    @classmethod
    def of(cls, bags: Sequence[np.ndarray], *, max_instances: int, rng: np.random.Generator) -> HeldOut:
        """Prepare held-out bags."""
        means = bag_means(bags)
        inst = subsample_instances(bags, max_instances, rng)
        return cls(means, inst, median_bandwidth(means), median_bandwidth(inst))


def bag_means(bags: Sequence[np.ndarray]) -> np.ndarray:
    """Mean instance of each bag, shape (n_bags, d)."""
    return np.stack([np.asarray(b).mean(axis=0) for b in bags])


def subsample_instances(bags: Sequence[np.ndarray], max_instances: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_instances`` instances drawn without replacement from all bags together."""
    x = np.concatenate(bags)
    return x[rng.choice(len(x), size=min(max_instances, len(x)), replace=False)]


def realism_scores(
    synthetic: Sequence[np.ndarray],
    heldout: Sequence[np.ndarray] | HeldOut,
    reference: Sequence[np.ndarray],
    *,
    max_instances: int = 1500,
    permutations: int = 0,
    seed: int = 0,
) -> dict[str, float]:
    """Realism of one class's synthetic bags against held-out real bags of that class.

    Parameters
    ----------
    synthetic, heldout, reference
        Bags as instance-feature arrays: generated, real held-out (test; or prepared once
        with :class:`HeldOut`) and real training (the real-vs-real reference).
    max_instances
        Instances subsampled per side for the instance-level MMD.
    permutations
        Label permutations of the C2ST p-values.
    seed
        Random seed.

    Returns
    -------
    dict
        ``mmd_bag`` (MMD² between bag means, synthetic vs held-out), ``mmd_bag_ref`` (real
        training vs held-out), ``mmd_instance`` and ``mmd_instance_ref`` (pooled instances),
        ``c2st`` and ``c2st_ref`` (classifier two-sample balanced accuracy on bag means) with
        ``c2st_p`` and ``c2st_ref_p`` (permutation p-values). Every MMD uses the held-out
        set's bandwidths.
    """
    rng = np.random.default_rng(seed)
    h = heldout if isinstance(heldout, HeldOut) else HeldOut.of(heldout, max_instances=max_instances, rng=rng)
    s, r = bag_means(synthetic), bag_means(reference)
    out = {
        "mmd_instance": mmd_rbf(
            subsample_instances(synthetic, max_instances, rng), h.instances, bandwidth=h.bandwidth_instance
        ),
        "mmd_instance_ref": mmd_rbf(
            subsample_instances(reference, max_instances, rng), h.instances, bandwidth=h.bandwidth_instance
        ),
    }
    ok = len(h.means) >= 2
    out["mmd_bag"] = mmd_rbf(s, h.means, bandwidth=h.bandwidth_bag) if ok and len(s) >= 2 else float("nan")
    out["mmd_bag_ref"] = mmd_rbf(r, h.means, bandwidth=h.bandwidth_bag) if ok and len(r) >= 2 else float("nan")
    nan2 = (float("nan"), float("nan"))
    out["c2st"], out["c2st_p"] = c2st(s, h.means, permutations=permutations, seed=seed) if ok else nan2
    out["c2st_ref"], out["c2st_ref_p"] = h.c2st_against(r, permutations=permutations, seed=seed) if ok else nan2
    return out


def realism_table(
    synthetic_bags: Sequence[np.ndarray],
    synthetic_labels: Sequence[str],
    pool_bags: dict[str, list[np.ndarray]],
    heldout: Mapping[str, HeldOut],
    *,
    max_instances: int = 1500,
    permutations: int = 0,
    seed: int = 0,
) -> list[dict[str, object]]:
    """Realism scores per class: synthetic vs held-out real bags, real pooled vs held-out as reference.

    Parameters
    ----------
    synthetic_bags, synthetic_labels
        Generated bags (instance features) and their classes.
    pool_bags
        Class -> real pooled bags (training patients; for a missing class, its external patients).
    heldout
        Class -> the real held-out (test) bags of the target cohort, prepared (:class:`HeldOut`).
    max_instances, permutations, seed
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
        if cls not in heldout or len(heldout[cls].means) < 2 or not pool_bags.get(cls):
            continue
        scores = realism_scores(
            syn, heldout[cls], pool_bags[cls], max_instances=max_instances, permutations=permutations, seed=seed
        )
        rows.append({"class": cls, "n_synthetic": len(syn), "n_heldout": len(heldout[cls].means), **scores})
    return rows


def realism_for_run(
    synthetic: Mapping[str, SyntheticSet],
    pool: ad.AnnData,
    heldout: Mapping[str, list[np.ndarray]],
    *,
    max_instances: int = 1500,
    permutations: int = 0,
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
    max_instances, permutations, seed
        See :func:`realism_scores`; the held-out sets are prepared once, so every method of
        the run is compared with the same instances and the same kernel.

    Returns
    -------
    pandas.DataFrame
        One row per method and class.
    """
    pool_bags: dict[str, list[np.ndarray]] = {}
    labels = pool.obs["label"].astype(str).to_numpy()
    for rows in pool.obs.groupby("patient", observed=True).indices.values():
        pool_bags.setdefault(labels[rows[0]], []).append(pool.X[rows])
    rng = np.random.default_rng(seed)
    prepared = {c: HeldOut.of(b, max_instances=max_instances, rng=rng) for c, b in sorted(heldout.items()) if b}
    out = []
    for method, syn in synthetic.items():
        if syn.selected is not None:
            syn = syn.subset(syn.selected)
        feats = syn.features if syn.features is not None else pool.X
        rows = realism_table(
            [feats[b] for b in syn.bags()],
            syn.label,
            pool_bags,
            prepared,
            max_instances=max_instances,
            permutations=permutations,
            seed=seed,
        )
        out += [{"method": method, **r} for r in rows]
    return pd.DataFrame(out)
