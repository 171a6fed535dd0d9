"""Gaussian mixture fitting with K chosen by BIC over a grid."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.mixture import GaussianMixture

logger = logging.getLogger(__name__)


@dataclass
class GMMFit:
    """A fitted mixture and the BIC grid that chose it.

    Attributes
    ----------
    model
        The fitted :class:`sklearn.mixture.GaussianMixture` (refitted on the whole input).
    n_components
        The chosen K.
    bic
        BIC per K tried, computed on the data the grid was fitted on.
    """

    model: GaussianMixture
    n_components: int
    bic: dict[int, float]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Hard cluster assignment of each row."""
        return self.model.predict(x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Responsibilities, shape (n, K)."""
        return self.model.predict_proba(x)


def _gmm(k: int, *, covariance_type: str, n_init: int, max_iter: int, reg_covar: float, seed: int) -> GaussianMixture:
    return GaussianMixture(
        n_components=k,
        covariance_type=covariance_type,
        n_init=n_init,
        max_iter=max_iter,
        reg_covar=reg_covar,
        random_state=seed,
    )


def fit_gmm(
    x: np.ndarray,
    n_components: int | Sequence[int],
    *,
    covariance_type: str = "full",
    n_init: int = 1,
    max_iter: int = 200,
    reg_covar: float = 1e-4,
    subsample: int | None = None,
    seed: int = 0,
) -> GMMFit:
    """Fit a GMM; with a grid of K, choose K by BIC.

    Parameters
    ----------
    x
        Data, shape (n, d).
    n_components
        A fixed K, or a sequence of K values to choose from by the lowest BIC.
    covariance_type
        ``full`` or ``diag``.
    n_init, max_iter, reg_covar
        Passed to :class:`sklearn.mixture.GaussianMixture`.
    subsample
        If set and smaller than n, the BIC grid is fitted on a seeded subsample of this
        many rows; the chosen K is then refitted on all rows.
    seed
        Random seed (subsample and initialisation).

    Returns
    -------
    GMMFit
        The chosen model and the BIC table.

    Raises
    ------
    ValueError
        If a K exceeds the number of rows.
    """
    grid = [int(n_components)] if np.isscalar(n_components) else sorted({int(k) for k in n_components})
    if max(grid) > len(x):
        raise ValueError(f"GMM with K={max(grid)} needs at least that many instances, pool has {len(x)}")
    opts = {"covariance_type": covariance_type, "n_init": n_init, "max_iter": max_iter, "reg_covar": reg_covar}
    if len(grid) == 1:
        model = _gmm(grid[0], seed=seed, **opts).fit(x)
        return GMMFit(model=model, n_components=grid[0], bic={grid[0]: float(model.bic(x))})
    rng = np.random.default_rng(seed)
    xs = x[np.sort(rng.choice(len(x), size=subsample, replace=False))] if subsample and subsample < len(x) else x
    bic: dict[int, float] = {}
    fitted: dict[int, GaussianMixture] = {}
    for k in grid:
        fitted[k] = _gmm(k, seed=seed, **opts).fit(xs)
        bic[k] = float(fitted[k].bic(xs))
        logger.info("GMM K=%d: BIC %.1f on %d instances", k, bic[k], len(xs))
    best = min(bic, key=bic.__getitem__)
    model = fitted[best] if xs is x else _gmm(best, seed=seed, **opts).fit(x)
    logger.info("chose K=%d by BIC", best)
    return GMMFit(model=model, n_components=best, bic=bic)
