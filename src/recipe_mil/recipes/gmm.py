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
        The selection criterion (BIC or ICL, see :func:`model_criterion`) per K tried,
        computed on the data the grid was fitted on.
    at_grid_edge
        True when the chosen K is the smallest or largest K tried (after widening) of a
        grid: BIC may prefer a K outside the range searched.
    """

    model: GaussianMixture | TorchGaussianMixture
    n_components: int
    bic: dict[int, float]
    at_grid_edge: bool = False

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


def widen_grid(grid: Sequence[int], best: int, *, n_rows: int) -> int | None:
    """Return the next K to try when BIC's optimum ``best`` sits on an edge of ``grid``, or None.

    Above the top the grid continues with its last step (at least 1); below the bottom
    with its first step, down to K = 2. K never exceeds ``n_rows``.
    """
    grid = sorted(grid)
    if len(grid) < 2:
        return None
    if best == grid[-1]:
        k = grid[-1] + max(grid[-1] - grid[-2], 1)
        return k if k <= n_rows else None
    if best == grid[0]:
        k = grid[0] - max(grid[1] - grid[0], 1)
        return k if k >= 2 else (2 if grid[0] > 2 else None)
    return None


CRITERIA = ("bic", "icl")


def model_criterion(model: GaussianMixture | TorchGaussianMixture, x: np.ndarray, criterion: str) -> float:
    """BIC, or ICL (BIC plus twice the entropy of the soft assignments; Biernacki et al. 2000).

    ICL also penalises components that overlap: a population that is not exactly Gaussian,
    which BIC splits into two heavily overlapping components, stays one cluster.
    """
    bic = float(model.bic(x))
    if criterion == "bic":
        return bic
    if criterion != "icl":
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    tau = np.clip(model.predict_proba(x), 1e-300, 1.0)
    return bic - 2.0 * float((tau * np.log(tau)).sum())


def refine_grid(tried: Sequence[int], best: int) -> int | None:
    """Return an untried neighbour ``best - 1`` or ``best + 1`` inside the range tried, or None.

    A local search on K after a coarse grid: (4, 6, 8) alone would miss K = 7.
    """
    lo, hi = min(tried), max(tried)
    nxt = [k for k in (best - 1, best + 1) if lo < k < hi and k not in tried]
    return nxt[0] if nxt else None


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
    widen: int = 0,
    criterion: str = "bic",
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
    widen
        With a grid: while BIC's optimum is the smallest or largest K tried, try up to
        this many further K beyond that edge (:func:`widen_grid`); then the optimum's
        untried neighbours inside the range are tried (:func:`refine_grid`). If the optimum
        is still on an edge, a warning is logged and ``at_grid_edge`` is set.

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

    def try_k(k: int) -> None:
        fitted[k] = _gmm(k, seed=seed, **opts).fit(xs)
        if len(grid) > 1 or xs is not x:
            bic[k] = model_criterion(fitted[k], xs, criterion)
            logger.info("GMM K=%d: %s %.1f on %d instances (%s)", k, criterion.upper(), bic[k], len(xs), engine)

    for k in grid:
        try_k(k)
    best = min(bic, key=bic.__getitem__) if bic else grid[0]
    at_edge = False
    if len(grid) > 1:
        for _ in range(widen):
            k = widen_grid(list(bic), best, n_rows=len(xs))
            if k is None:
                break
            logger.info("BIC's optimum K=%d is on the edge of the grid %s: trying K=%d", best, sorted(bic), k)
            try_k(k)
            best = min(bic, key=bic.__getitem__)
        while (k := refine_grid(list(bic), best)) is not None:
            try_k(k)
            best = min(bic, key=bic.__getitem__)
        at_edge = best in (min(bic), max(bic))
        if at_edge:
            logger.warning(
                "GMM: BIC's optimum K=%d is still on the edge of the K tried (%s); a K outside that range may "
                "fit better (widen gmm.n_components)",
                best,
                sorted(bic),
            )
    model = fitted[best] if xs is x else _gmm(best, seed=seed, warm=fitted[best], **opts).fit(x)
    if not bic:
        bic[best] = model_criterion(model, x, criterion)
    logger.info("chose K=%d by %s", best, criterion.upper())
    return GMMFit(model=model, n_components=best, bic=bic, at_grid_edge=at_edge)
