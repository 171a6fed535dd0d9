"""The library's shared data types, kept free of any library import.

Readers and writers (:mod:`recipe_mil.io`) and the steps that produce these objects
(:mod:`recipe_mil.recipes`) both import them from here, so ``io/`` never imports
``recipes/`` (as anndata keeps its types in its core and its readers import them). The old
locations (``recipe_mil.recipes.generate.SyntheticSet``, ``recipe_mil.recipes.recipes.ClassRecipe``
and ``BagSizeModel``) re-export the same classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["BagSizeModel", "ClassRecipe", "SyntheticSet", "lengths_to_indptr"]


@dataclass
class BagSizeModel:
    """Log-normal bag-size model, clipped to the observed range.

    Attributes
    ----------
    log_mean, log_sd
        Mean and standard deviation of log bag size.
    min_size, max_size
        Clipping range (the observed extremes).
    """

    log_mean: float
    log_sd: float
    min_size: int
    max_size: int

    @classmethod
    def fit(cls, sizes: Sequence[int]) -> BagSizeModel:
        """Fit to observed bag sizes."""
        logs = np.log(np.asarray(sizes, dtype=float))
        return cls(float(logs.mean()), float(logs.std()), int(np.min(sizes)), int(np.max(sizes)))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` bag sizes."""
        draws = np.exp(rng.normal(self.log_mean, self.log_sd, size=n))
        return np.clip(np.rint(draws), self.min_size, self.max_size).astype(np.int64)


@dataclass
class ClassRecipe:
    """The recipe of one class.

    Attributes
    ----------
    alpha
        Dirichlet concentration over the K clusters.
    mean_proportions
        ``alpha / alpha.sum()``.
    dirichlet_fit
        ``mle`` or ``moments``.
    bag_size
        The class's bag-size model.
    cohort
        The cohort the recipe was learned from.
    patients
        The patients it was learned from.
    patient_proportions
        Their proportion vectors (rows), for plots and checks.
    """

    alpha: list[float]
    mean_proportions: list[float]
    dirichlet_fit: str
    bag_size: BagSizeModel
    cohort: str
    patients: list[str]
    patient_proportions: list[list[float]]

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClassRecipe:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "bag_size": BagSizeModel(**d["bag_size"])})


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
        return np.split(self.indices, self.indptr[1:-1]) if len(self) else []

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
