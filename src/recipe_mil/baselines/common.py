"""Helpers shared by the baselines: the pool's patients as bags of row indices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans


@dataclass
class PoolBags:
    """The pooled patients as bags of pool-row indices.

    Attributes
    ----------
    rows
        Pool row indices of each patient.
    labels
        Each patient's label.
    """

    rows: list[np.ndarray]
    labels: np.ndarray

    @classmethod
    def from_obs(cls, obs: pd.DataFrame) -> PoolBags:
        """Group pool rows by ``obs['patient']`` (first-appearance order)."""
        patients = obs["patient"].astype(str).to_numpy()
        uniq, first = np.unique(patients, return_index=True)
        order = uniq[np.argsort(first)]
        groups = pd.Series(np.arange(len(patients))).groupby(patients).indices
        labels = obs["label"].astype(str).to_numpy()
        return cls(rows=[np.asarray(groups[p]) for p in order], labels=np.array([labels[groups[p][0]] for p in order]))

    def of_class(self, cls: str) -> list[int]:
        """Return the indices of the bags of class ``cls``."""
        return [i for i, lab in enumerate(self.labels) if lab == cls]


def bag_prototypes(x: np.ndarray, k: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means prototypes of one bag (k capped at the bag size).

    Returns
    -------
    centres
        Shape (k', d).
    assignment
        Cluster of each instance.
    """
    k = max(1, min(k, len(x)))
    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    return km.cluster_centers_.astype(np.float32), km.labels_
