"""Synthetic patients as indices into the pool (docs/method.md §4.5)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from recipe_mil.types import ClassRecipe, SyntheticSet, lengths_to_indptr

logger = logging.getLogger(__name__)

INSTANCE_SOURCES = ("class", "target", "pool", "external")


def candidate_mask(
    source: str,
    cls: str,
    labels: np.ndarray,
    cohorts: np.ndarray,
) -> np.ndarray:
    """Which pool rows may fill a bag of class ``cls`` under an ``instance_source`` policy.

    Parameters
    ----------
    source
        ``class`` (instances of class-``cls`` patients), ``target`` (any target-cohort
        instance), ``pool`` (any pooled instance) or ``external`` (external-cohort instances).
    cls
        The class being generated.
    labels, cohorts
        Per pool row: the patient's label and cohort.

    Returns
    -------
    numpy.ndarray
        Boolean mask over pool rows.
    """
    if source == "class":
        return labels == cls
    if source == "target":
        return cohorts == "target"
    if source == "external":
        return cohorts == "external"
    if source == "pool":
        return np.ones(len(labels), dtype=bool)
    raise ValueError(f"unknown instance_source {source!r}; choose one of {INSTANCE_SOURCES}")


def sample_groups(counts: np.ndarray, n_members: int, rng: np.random.Generator, *, max_rounds: int = 20) -> np.ndarray:
    """Draw ``counts[g]`` member positions for every group ``g`` at once, without repeats within a group.

    Positions are drawn uniformly with replacement, then repeats inside a group are redrawn
    (only the groups that had one are checked again) until none is left. A group asking for
    more than ``n_members`` positions draws with replacement. Groups still holding a repeat
    after ``max_rounds`` (a group asking for nearly all members) are drawn one by one.

    Parameters
    ----------
    counts
        Positions wanted per group, shape (G,).
    n_members
        Size of the set drawn from (positions ``0 .. n_members - 1``).
    rng
        Random generator.
    max_rounds
        Vectorised redraw rounds before the per-group fallback.

    Returns
    -------
    numpy.ndarray
        Int64 positions, group after group (``counts[0]`` for group 0, then group 1...).
    """
    counts = np.asarray(counts, dtype=np.int64)
    out = rng.integers(0, n_members, size=int(counts.sum()))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    group = np.repeat(np.arange(len(counts)), counts)
    check = (counts > 1) & (counts <= n_members)
    # a table over (group, member) finds repeats by a scatter and a gather when it is small
    # (np.empty: only the touched entries are ever written); a sort of one int64 key otherwise
    table = np.empty(len(counts) * n_members, dtype=np.int64) if len(counts) * n_members <= 2**24 else None
    for _ in range(max_rounds):
        rows = np.flatnonzero(check[group])
        if not len(rows):
            return out
        key = group[rows] * n_members + out[rows]
        if table is not None:
            table[key] = np.arange(len(rows))  # the last occurrence of a key wins
            dup = rows[table[key] != np.arange(len(rows))]
        else:
            order = np.argsort(key)
            dup = rows[order[1:][key[order[1:]] == key[order[:-1]]]]
        check[:] = False
        if not len(dup):
            return out
        check[group[dup]] = True
        out[dup] = rng.integers(0, n_members, size=len(dup))
    for g in np.unique(group[np.flatnonzero(check[group])]):
        out[starts[g] : starts[g] + counts[g]] = rng.choice(n_members, size=counts[g], replace=False)
    return out


def generate_synthetic(
    recipes: Mapping[str, ClassRecipe],
    clusters: np.ndarray,
    labels: np.ndarray,
    cohorts: np.ndarray,
    *,
    n_per_class: int,
    instance_source: str | Mapping[str, str] = "class",
    seed: int = 0,
) -> SyntheticSet:
    """Generate synthetic patients by re-mixing pool instances along class recipes.

    For each synthetic patient of class c: proportions ~ Dirichlet(alpha_c), size ~ the
    class's bag-size model, counts ~ Multinomial(size, proportions); each cluster's count is
    filled with pool rows of that cluster allowed by ``instance_source`` (without replacement
    while enough rows exist, with replacement beyond). A cluster with no allowed rows falls
    back to any pool row of that cluster; a cluster empty in the whole pool has its count
    moved to the other clusters in proportion.

    Everything is vectorised over patients: one Dirichlet, one multinomial and, per class and
    cluster, one batched draw (:func:`sample_groups`); the result is index-based (CSR), with
    each bag's rows grouped by cluster (a bag is a set: MIL pooling ignores the order).

    Parameters
    ----------
    recipes
        Class -> recipe (learned on the pool's clusters).
    clusters
        Hard cluster of each pool row.
    labels, cohorts
        Label and cohort of each pool row's patient.
    n_per_class
        Synthetic patients per class.
    instance_source
        One policy for all classes, or class -> policy.
    seed
        Random seed.

    Returns
    -------
    SyntheticSet
        Index-based synthetic bags.
    """
    rng = np.random.default_rng(seed)
    k = len(next(iter(recipes.values())).alpha)
    clusters = np.asarray(clusters)
    by_cluster = np.argsort(clusters, kind="stable")
    bounds = np.searchsorted(clusters[by_cluster], np.arange(k + 1))
    all_members = [by_cluster[bounds[j] : bounds[j + 1]] for j in range(k)]
    nonempty = np.array([len(m) > 0 for m in all_members])
    classes = sorted(recipes)
    counts_all, props_all = [], []
    members_all: list[list[np.ndarray]] = []
    for cls in classes:
        recipe = recipes[cls]
        source = instance_source if isinstance(instance_source, str) else instance_source.get(cls, "class")
        allowed = candidate_mask(source, cls, labels, cohorts)
        members = []
        for j in range(k):
            m = all_members[j][allowed[all_members[j]]]
            if len(m) == 0 and len(all_members[j]):
                logger.warning("class %s: no %s instances in cluster %d, using the whole cluster", cls, source, j)
                m = all_members[j]
            members.append(m)
        members_all.append(members)
        props = rng.dirichlet(np.asarray(recipe.alpha), size=n_per_class)
        sizes = recipe.bag_size.sample(rng, n_per_class)
        q = np.where(nonempty, props, 0.0)
        counts_all.append(rng.multinomial(sizes, q / q.sum(axis=1, keepdims=True)))
        props_all.append(props)
    counts = np.concatenate(counts_all)  # (n_bags, K)
    indptr = lengths_to_indptr(counts.sum(axis=1))
    offsets = indptr[:-1, None] + np.concatenate([np.zeros((len(counts), 1), np.int64), counts.cumsum(1)[:, :-1]], 1)
    indices = np.empty(indptr[-1], dtype=np.int64)
    for c, members in enumerate(members_all):
        rows = slice(c * n_per_class, (c + 1) * n_per_class)
        for j in np.flatnonzero(counts[rows].sum(axis=0)):
            cnt = counts[rows, j]
            picks = members[j][sample_groups(cnt, len(members[j]), rng)]
            indices[np.repeat(offsets[rows, j] - (np.cumsum(cnt) - cnt), cnt) + np.arange(cnt.sum())] = picks
    return SyntheticSet(
        indptr=indptr,
        indices=indices,
        label=np.repeat(np.asarray(classes, dtype=object), n_per_class),
        source_class=np.repeat(np.asarray(classes, dtype=object), n_per_class),
        proportions=np.concatenate(props_all),
    )
