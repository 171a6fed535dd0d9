"""Gaussian mixture fitting with K chosen by BIC over a grid."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.mixture import GaussianMixture

from recipe_mil.recipes.gmm_torch import TorchGaussianMixture

logger = logging.getLogger(__name__)


@dataclass
class GMMFit:
    """A fitted mixture and the BIC grid that chose it.

    Attributes
    ----------
    model
        The fitted mixture (refitted on the whole input): a
        :class:`sklearn.mixture.GaussianMixture` or a
        :class:`~recipe_mil.recipes.gmm_torch.TorchGaussianMixture`.
    n_components
        The chosen K.
    bic
        BIC per K tried, computed on the data the grid was fitted on.
    """

    model: GaussianMixture | TorchGaussianMixture
    n_components: int
    bic: dict[int, float]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Hard cluster assignment of each row."""
        return self.model.predict(x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Responsibilities, shape (n, K)."""
        return self.model.predict_proba(x)


GMM_ENGINES = ("torch", "sklearn")


def _gmm(
    k: int,
    *,
    engine: str,
    covariance_type: str,
    n_init: int,
    max_iter: int,
    reg_covar: float,
    seed: int,
    device: str,
    warm: GaussianMixture | TorchGaussianMixture | None = None,
) -> GaussianMixture | TorchGaussianMixture:
    """Build an unfitted mixture of either engine; ``warm`` gives starting parameters."""
    opts: dict[str, object] = {
        "n_components": k,
        "covariance_type": covariance_type,
        "n_init": n_init,
        "max_iter": max_iter,
        "reg_covar": reg_covar,
        "random_state": seed,
    }
    if warm is not None:
        opts.update(weights_init=warm.weights_, means_init=warm.means_, precisions_init=warm.precisions_, n_init=1)
    if engine == "sklearn":
        return GaussianMixture(**opts)
    if engine == "torch":
        return TorchGaussianMixture(device=device, **opts)
    raise ValueError(f"gmm engine must be one of {GMM_ENGINES}, got {engine!r}")


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
    engine: str = "torch",
    device: str = "auto",
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
        EM settings, as in :class:`sklearn.mixture.GaussianMixture`.
    subsample
        If set and smaller than n, the BIC grid is fitted on a seeded subsample of this
        many rows; the chosen K is then refitted on all rows, starting from its subsample
        fit (one EM run instead of ``n_init`` fresh ones).
    seed
        Random seed (subsample and initialisation).
    engine
        ``torch`` (chunked float32 EM, CPU or GPU) or ``sklearn``.
    device
        Torch engine's device: ``auto``, ``cpu`` or ``cuda``.

    Returns
    -------
    GMMFit
        The chosen model and the BIC table.

    Raises
    ------
    ValueError
        If a K exceeds the number of rows, or the engine is unknown.
    """
    grid = [int(n_components)] if np.isscalar(n_components) else sorted({int(k) for k in n_components})
    if max(grid) > len(x):
        raise ValueError(f"GMM with K={max(grid)} needs at least that many instances, pool has {len(x)}")
    opts = {
        "engine": engine,
        "covariance_type": covariance_type,
        "n_init": n_init,
        "max_iter": max_iter,
        "reg_covar": reg_covar,
        "device": device,
    }
    rng = np.random.default_rng(seed)
    xs = x[np.sort(rng.choice(len(x), size=subsample, replace=False))] if subsample and subsample < len(x) else x
    bic: dict[int, float] = {}
    fitted: dict[int, GaussianMixture | TorchGaussianMixture] = {}
    for k in grid:
        fitted[k] = _gmm(k, seed=seed, **opts).fit(xs)
        if len(grid) > 1 or xs is not x:
            bic[k] = float(fitted[k].bic(xs))
            logger.info("GMM K=%d: BIC %.1f on %d instances (%s)", k, bic[k], len(xs), engine)
    best = min(bic, key=bic.__getitem__) if bic else grid[0]
    model = fitted[best] if xs is x else _gmm(best, seed=seed, warm=fitted[best], **opts).fit(x)
    if not bic:
        bic[best] = float(model.bic(x))
    logger.info("chose K=%d by BIC", best)
    return GMMFit(model=model, n_components=best, bic=bic)
