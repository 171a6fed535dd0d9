"""PseMix-style pseudo-bag mixup (after Liu et al. 2024).

Each bag is split into pseudo-bags by prototype-stratified splitting (its instances are
clustered by k-means; each cluster is dealt round-robin over the pseudo-bags, so every
pseudo-bag carries every phenotype). A mixed bag takes ``m`` pseudo-bags of bag A and
``n - m`` of bag B, ``m/n`` following Beta(alpha, alpha); its soft label mixes the two bag
labels in the same ratio.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from recipe_mil.baselines.common import PoolBags, bag_prototypes
from recipe_mil.recipes.generate import SyntheticSet


def pseudo_bags(x: np.ndarray, n_pseudo: int, n_prototypes: int, *, seed: int) -> list[np.ndarray]:
    """Split one bag into ``n_pseudo`` prototype-stratified pseudo-bags.

    Parameters
    ----------
    x
        The bag's instances.
    n_pseudo
        Number of pseudo-bags.
    n_prototypes
        k of the per-bag k-means.
    seed
        Random seed.

    Returns
    -------
    list of numpy.ndarray
        Local instance indices of each pseudo-bag (disjoint, covering the bag).
    """
    rng = np.random.default_rng(seed)
    _, assign = bag_prototypes(x, n_prototypes, seed=seed)
    parts: list[list[int]] = [[] for _ in range(n_pseudo)]
    offset = 0
    for c in np.unique(assign):
        members = rng.permutation(np.flatnonzero(assign == c))
        for j, idx in enumerate(members):
            parts[(offset + j) % n_pseudo].append(int(idx))
        offset += len(members)
    return [np.asarray(sorted(p), dtype=np.int64) for p in parts]


def psemix_bags(
    x: np.ndarray,
    obs: pd.DataFrame,
    classes: Sequence[str],
    *,
    n_per_class: int,
    n_pseudo: int = 4,
    n_prototypes: int = 8,
    alpha: float = 1.0,
    seed: int,
) -> SyntheticSet:
    """Mixed bags of pseudo-bags with soft labels.

    The arguments every baseline takes are described in :mod:`recipe_mil.baselines`; here ``classes`` are all
    class names (the soft-target columns) and ``n_per_class`` counts the mixed bags whose bag A is of each class.

    Parameters
    ----------
    n_pseudo, n_prototypes, alpha
        Pseudo-bags per bag, prototypes per bag, Beta parameter.

    Returns
    -------
    SyntheticSet
        Index-based bags with ``soft_targets``; ``label`` is the soft target's argmax and
        ``source_class`` the class of bag A.
    """
    rng = np.random.default_rng(seed)
    pb = PoolBags.from_obs(obs)
    classes = list(classes)
    splits = [
        [rows[p] for p in pseudo_bags(x[rows], n_pseudo, n_prototypes, seed=seed + i)] for i, rows in enumerate(pb.rows)
    ]
    bags, labels, sources, soft = [], [], [], []
    for cls in classes:
        own = pb.of_class(cls)
        if not own:
            continue
        for _ in range(n_per_class):
            a, b = int(rng.choice(own)), int(rng.integers(len(pb.rows)))
            m = int(np.clip(np.rint(rng.beta(alpha, alpha) * n_pseudo), 1, n_pseudo))
            take_a = rng.choice(n_pseudo, size=m, replace=False)
            take_b = rng.choice(n_pseudo, size=n_pseudo - m, replace=False)
            bag = np.concatenate([splits[a][i] for i in take_a] + [splits[b][i] for i in take_b])
            target = np.zeros(len(classes))
            target[classes.index(pb.labels[a])] += m / n_pseudo
            target[classes.index(pb.labels[b])] += 1 - m / n_pseudo
            bags.append(bag)
            soft.append(target)
            labels.append(classes[int(np.argmax(target))])
            sources.append(cls)
    return SyntheticSet.from_bags(bags, labels, sources, soft_targets=np.asarray(soft, dtype=np.float32))
