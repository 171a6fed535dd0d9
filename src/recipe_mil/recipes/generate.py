"""Synthetic patients as indices into the pool (DESIGN §4 step 4)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from recipe_mil.recipes.recipes import ClassRecipe

logger = logging.getLogger(__name__)

INSTANCE_SOURCES = ("class", "target", "pool", "external")


@dataclass
class SyntheticSet:
    """Synthetic patients in CSR form: bag ``i`` is ``pool[indices[indptr[i]:indptr[i+1]]]``.

    Attributes
    ----------
    indptr
        Int64, length n_bags + 1.
    indices
        Int64 row indices into the pool.
    label
        Class label of each synthetic bag.
    source_class
        Class whose recipe generated the bag.
    proportions
        The Dirichlet draw of each bag, shape (n_bags, K).
    scores
        Optional per-bag uncertainty scores (name -> array).
    soft_targets
        Optional per-bag class-probability targets, shape (n_bags, C) (mixing baselines).
    features
        Optional own feature matrix: when set, ``indices`` index its rows instead of the
        pool's (baselines that synthesise new instances, e.g. ReMix prototypes).
    selected
        Optional boolean mask of the bags kept by a selection policy.
    """

    indptr: np.ndarray
    indices: np.ndarray
    label: np.ndarray
    source_class: np.ndarray
    proportions: np.ndarray | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    soft_targets: np.ndarray | None = None
    features: np.ndarray | None = None
    selected: np.ndarray | None = None

    def __len__(self) -> int:
        """Return the number of synthetic bags."""
        return len(self.label)

    def bag(self, i: int) -> np.ndarray:
        """Pool row indices of bag ``i``."""
        return self.indices[self.indptr[i] : self.indptr[i + 1]]

    def bags(self) -> list[np.ndarray]:
        """Pool row indices of every bag."""
        return np.split(self.indices, self.indptr[1:-1])

    def subset(self, keep: np.ndarray) -> SyntheticSet:
        """Return the bags whose index is in ``keep`` (index array or boolean mask), scores included."""
        ids = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        bags = self.bags()
        return SyntheticSet(
            indptr=lengths_to_indptr([len(bags[i]) for i in ids]),
            indices=np.concatenate([bags[i] for i in ids]) if len(ids) else np.empty(0, np.int64),
            label=self.label[ids],
            source_class=self.source_class[ids],
            proportions=None if self.proportions is None else self.proportions[ids],
            scores={k: v[ids] for k, v in self.scores.items()},
            soft_targets=None if self.soft_targets is None else self.soft_targets[ids],
            features=self.features,
        )

    @classmethod
    def from_bags(
        cls, bags: list[np.ndarray], labels: list[str], source_class: list[str] | None = None, **kwargs: object
    ) -> SyntheticSet:
        """Build from a list of index arrays and their labels."""
        return cls(
            indptr=lengths_to_indptr([len(b) for b in bags]),
            indices=np.concatenate(bags).astype(np.int64) if bags else np.empty(0, np.int64),
            label=np.asarray(labels, dtype=object),
            source_class=np.asarray(labels if source_class is None else source_class, dtype=object),
            **kwargs,
        )


def lengths_to_indptr(lengths: list[int] | np.ndarray) -> np.ndarray:
    """CSR row pointer from bag lengths."""
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


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
    all_members = [np.flatnonzero(clusters == j) for j in range(k)]
    nonempty = np.array([len(m) > 0 for m in all_members])
    bags: list[np.ndarray] = []
    out_labels: list[str] = []
    props_out: list[np.ndarray] = []
    for cls in sorted(recipes):
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
        alpha = np.asarray(recipe.alpha)
        props = rng.dirichlet(alpha, size=n_per_class)
        sizes = recipe.bag_size.sample(rng, n_per_class)
        for p, size in zip(props, sizes, strict=True):
            q = np.where(nonempty, p, 0.0)
            q = q / q.sum()
            counts = rng.multinomial(size, q)
            parts = []
            for j in np.flatnonzero(counts):
                m = members[j]
                replace = counts[j] > len(m)
                parts.append(rng.choice(m, size=counts[j], replace=replace))
            bag = np.concatenate(parts)
            bags.append(rng.permutation(bag))
            out_labels.append(cls)
            props_out.append(p)
    return SyntheticSet.from_bags(bags, out_labels, proportions=np.asarray(props_out))
