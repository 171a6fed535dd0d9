"""Per-patient cluster proportions and per-class recipes (Dirichlet + bag-size model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, gammaln, polygamma

from recipe_mil.types import BagSizeModel, ClassRecipe

PROPORTION_FLOOR = 1e-6


def patient_counts(
    assignments: np.ndarray,
    patient_codes: np.ndarray,
    n_patients: int,
    n_clusters: int,
) -> np.ndarray:
    """Each patient's (expected) instance count per cluster.

    Parameters
    ----------
    assignments
        Either hard cluster labels (int, shape (n,)) or responsibilities (float, shape (n, K)).
    patient_codes
        Integer patient index of each instance, in ``[0, n_patients)``.
    n_patients, n_clusters
        Output shape.

    Returns
    -------
    numpy.ndarray
        Shape (n_patients, n_clusters): hard counts, or summed responsibilities.

    Raises
    ------
    ValueError
        If a patient has no instance.
    """
    if assignments.ndim == 1:
        weights = np.zeros((len(assignments), n_clusters))
        weights[np.arange(len(assignments)), assignments] = 1.0
    else:
        weights = assignments
    sums = np.zeros((n_patients, n_clusters))
    np.add.at(sums, patient_codes, weights)
    if (sums.sum(axis=1) == 0).any():
        raise ValueError("a patient has no instances in the pool")
    return sums


def patient_proportions(
    assignments: np.ndarray,
    patient_codes: np.ndarray,
    n_patients: int,
    n_clusters: int,
) -> np.ndarray:
    """Each patient's proportion vector over the clusters (rows of :func:`patient_counts`, normalised)."""
    counts = patient_counts(assignments, patient_codes, n_patients, n_clusters)
    return counts / counts.sum(axis=1, keepdims=True)


def _inv_digamma(y: np.ndarray, n_iter: int = 8) -> np.ndarray:
    """Inverse of the digamma function by Newton's method (Minka 2000)."""
    x = np.where(y >= -2.22, np.exp(y) + 0.5, -1.0 / (y - digamma(1.0)))
    for _ in range(n_iter):
        x = x - (digamma(x) - y) / polygamma(1, x)
    return x


def dirichlet_moments(p: np.ndarray) -> np.ndarray:
    """Dirichlet concentration by moment matching (fallback and starting point).

    Parameters
    ----------
    p
        Proportions, shape (n, K), rows on the simplex.

    Returns
    -------
    numpy.ndarray
        Concentration vector alpha, shape (K,).
    """
    mean = p.mean(axis=0)
    var = p.var(axis=0)
    ok = (var > 0) & (mean > 0) & (mean < 1)
    if not ok.any():
        return np.maximum(mean, PROPORTION_FLOOR) * 100.0
    s = np.median(mean[ok] * (1 - mean[ok]) / var[ok] - 1)
    s = float(np.clip(s, 1e-2, 1e4))
    return np.maximum(mean * s, PROPORTION_FLOOR)


def dirichlet_loglik(p: np.ndarray, alpha: np.ndarray) -> float:
    """Mean log-likelihood of proportion rows ``p`` under Dirichlet(``alpha``)."""
    logp = np.log(np.clip(p, PROPORTION_FLOOR, None))
    return float(gammaln(alpha.sum()) - gammaln(alpha).sum() + ((alpha - 1) * logp).sum(axis=1).mean())


def fit_dirichlet(p: np.ndarray, *, max_iter: int = 1000, tol: float = 1e-8) -> tuple[np.ndarray, str]:
    """Maximum-likelihood Dirichlet (Minka's fixed point), moment matching as fallback.

    Parameters
    ----------
    p
        Proportions, shape (n, K). Zeros are floored at 1e-6 and rows renormalised.
    max_iter, tol
        Fixed-point iteration limits.

    Returns
    -------
    alpha
        Concentration vector, shape (K,).
    method
        ``"mle"``, or ``"moments"`` when there is a single patient or the iteration failed.
    """
    p = np.clip(np.asarray(p, dtype=float), PROPORTION_FLOOR, None)
    p = p / p.sum(axis=1, keepdims=True)
    alpha0 = dirichlet_moments(p)
    if len(p) < 2:
        return alpha0, "moments"
    mean_log = np.log(p).mean(axis=0)
    alpha = alpha0.copy()
    for _ in range(max_iter):
        new = _inv_digamma(digamma(alpha.sum()) + mean_log)
        if not np.all(np.isfinite(new)) or np.any(new <= 0):
            return alpha0, "moments"
        if np.max(np.abs(new - alpha)) < tol * max(1.0, float(alpha.max())):
            alpha = new
            break
        alpha = new
    if alpha.sum() > 1e6 or dirichlet_loglik(p, alpha) < dirichlet_loglik(p, alpha0):
        return alpha0, "moments"
    return alpha, "mle"


def fit_dirichlet_multinomial(counts: np.ndarray, *, max_iter: int = 5000, tol: float = 1e-7) -> tuple[np.ndarray, str]:
    """Maximum-likelihood Dirichlet from per-patient cluster counts (Dirichlet-multinomial).

    A patient's counts are Multinomial(n, p) with p ~ Dirichlet(alpha): the model the
    generator samples from. Fitting the counts rather than the proportions handles
    clusters a patient has no instance in (a zero proportion has no Dirichlet density)
    and does not mistake multinomial sampling noise for patient heterogeneity. Minka's
    (2000) fixed point for the Polya distribution, started from moment matching.

    Parameters
    ----------
    counts
        Shape (n_patients, K): hard counts or summed responsibilities.
    max_iter, tol
        Iteration limits (relative change of alpha).

    Returns
    -------
    alpha
        Concentration vector, shape (K,); clusters no patient uses get a tiny alpha.
    method
        ``"mle"``, or ``"moments"`` for a single patient or when the iteration fails.
    """
    counts = np.asarray(counts, dtype=float)
    totals = counts.sum(axis=1)
    alpha0 = dirichlet_moments((counts + 0.5) / (totals[:, None] + 0.5 * counts.shape[1]))
    if len(counts) < 2:
        return alpha0, "moments"
    alpha = alpha0.copy()
    for _ in range(max_iter):
        a_sum = alpha.sum()
        num = (digamma(counts + alpha) - digamma(alpha)).sum(axis=0)
        den = (digamma(totals + a_sum) - digamma(a_sum)).sum()
        new = np.maximum(alpha * num / den, PROPORTION_FLOOR)
        if not np.all(np.isfinite(new)):
            return alpha0, "moments"
        done = np.max(np.abs(new - alpha) / alpha) < tol
        alpha = new
        if done:
            break
    if alpha.sum() > 1e6:  # no over-dispersion: the patients look multinomial; cap the concentration
        alpha = alpha / alpha.sum() * 1e6
    return alpha, "mle"


CONCENTRATIONS = ("shrunk", "mle")
_RHO_MIN, _RHO_MAX = 1e-6, 1.0 - 1e-6


@dataclass(frozen=True)
class DispersionMoments:
    """Bias-corrected moment statistics of one class's over-dispersion.

    A patient's cluster proportions ``p_i`` (``N_i`` instances) have, under the
    Dirichlet-multinomial with mean ``m`` and concentration ``s``,
    ``Var(p_ik) = m_k (1 - m_k) (rho + (1 - rho) / N_i)`` with ``rho = 1 / (s + 1)``.
    The sample variance (``n - 1`` denominator) is unbiased for the mean of those
    variances, and ``pbar (1 - pbar) + v / n`` for ``m (1 - m)``; summing over clusters
    gives one equation for ``rho``. The maximum-likelihood concentration ignores that the
    class mean is estimated from the same few patients, which makes them look alike: from
    2 patients it overestimates ``s`` about twofold, with a long upper tail.

    Attributes
    ----------
    variance
        Sum over clusters of the sample variances of the patients' proportions.
    binomial
        Sum over clusters of the bias-corrected ``m_k (1 - m_k)``.
    inv_size
        Mean of ``1 / N_i`` (the multinomial part of the variance).
    n_patients
        Number of patients (degrees of freedom ``n - 1``).
    """

    variance: float
    binomial: float
    inv_size: float
    n_patients: int

    @classmethod
    def of(cls, counts: np.ndarray) -> DispersionMoments:
        """Moments of per-patient counts (rows: patients, columns: clusters)."""
        counts = np.asarray(counts, dtype=float)
        totals = counts.sum(axis=1)
        n = len(counts)
        p = counts / totals[:, None]
        pbar = p.mean(axis=0)
        var = p.var(axis=0, ddof=1) if n > 1 else np.zeros_like(pbar)
        return cls(float(var.sum()), float((pbar * (1 - pbar) + var / n).sum()), float(np.mean(1 / totals)), n)

    @property
    def dof(self) -> int:
        """Degrees of freedom of the variance: ``n - 1``."""
        return max(self.n_patients - 1, 0)

    def rho(self) -> float:
        """Return the intra-class correlation ``1 / (s + 1)`` these moments imply (clipped to (0, 1))."""
        return _rho(self.variance, self.binomial, self.inv_size)


def _rho(variance: float, binomial: float, inv_size: float) -> float:
    if binomial <= 0 or inv_size >= 1:
        return _RHO_MIN  # every instance in one cluster, or one instance per patient: no information
    return float(np.clip((variance / binomial - inv_size) / (1 - inv_size), _RHO_MIN, _RHO_MAX))


def pooled_rho(moments: Sequence[DispersionMoments]) -> float | None:
    """Intra-class correlation shared by several classes (each weighted by its ``n - 1``); None without any."""
    w = np.array([m.dof for m in moments], dtype=float)
    if w.sum() == 0:
        return None
    h = float(np.average([m.inv_size for m in moments], weights=w))
    return _rho(float(w @ [m.variance for m in moments]), float(w @ [m.binomial for m in moments]), h)


def fit_class_dirichlets(
    counts: Mapping[str, np.ndarray], *, concentration: str = "shrunk", prior_weight: float = 4.0
) -> dict[str, tuple[np.ndarray, str]]:
    """Fit every class's Dirichlet from its patients' cluster counts.

    The mean proportions are the Dirichlet-multinomial maximum-likelihood means
    (:func:`fit_dirichlet_multinomial`). With ``concentration="shrunk"`` the concentration
    comes from the bias-corrected moments of :class:`DispersionMoments`, shrunk towards the
    value all classes share: on the scale of ``rho = 1 / (s + 1)``,
    ``rho_c = ((n_c - 1) rho_own + w rho_pooled) / (n_c - 1 + w)`` with ``w = prior_weight``
    (a prior worth ``w`` patients' degrees of freedom). A class with many patients keeps
    its own dispersion; one with two leans on the others. Checked against simulated truth
    (concentration 20, 6 clusters, ~300 instances per patient): from 2 patients per class
    the median estimate is 20 (maximum likelihood: 48) and the 95th percentile 42 (330).

    Parameters
    ----------
    counts
        Class -> per-patient counts (or summed responsibilities), shape (n_patients, K).
    concentration
        ``shrunk`` (default) or ``mle`` (the Dirichlet-multinomial maximum likelihood).
    prior_weight
        ``w`` above, in patients (degrees of freedom).

    Returns
    -------
    dict
        Class -> (alpha, how it was fitted: ``shrunk``, ``mle`` or ``moments``).
    """
    if concentration not in CONCENTRATIONS:
        raise ValueError(f"concentration must be one of {CONCENTRATIONS}, got {concentration!r}")
    fits = {c: fit_dirichlet_multinomial(x) for c, x in counts.items()}
    if concentration == "mle":
        return fits
    moments = {c: DispersionMoments.of(x) for c, x in counts.items()}
    shared = pooled_rho(list(moments.values()))
    if shared is None:  # no class with two patients: nothing to estimate a dispersion from
        return fits
    out: dict[str, tuple[np.ndarray, str]] = {}
    for c, (alpha, _) in fits.items():
        m = moments[c]
        rho = (m.dof * m.rho() + prior_weight * shared) / (m.dof + prior_weight)
        out[c] = (alpha / alpha.sum() * (1.0 / rho - 1.0), "shrunk")
    return out


def learn_recipe(
    counts: np.ndarray,
    sizes: Sequence[int],
    patients: Sequence[str],
    cohort: str,
    *,
    dirichlet: tuple[np.ndarray, str] | None = None,
) -> ClassRecipe:
    """Learn one class's recipe from its patients' cluster counts and bag sizes.

    Parameters
    ----------
    counts
        Shape (n_patients, K): per-patient (expected) counts per cluster.
    sizes
        Bag size of each patient.
    patients
        Patient ids (kept for provenance).
    cohort
        Cohort of those patients.
    dirichlet
        The class's Dirichlet (alpha, how fitted) when already fitted together with the
        other classes (:func:`fit_class_dirichlets`); default: its own maximum likelihood.

    Returns
    -------
    ClassRecipe
        The fitted recipe.
    """
    alpha, method = dirichlet if dirichlet is not None else fit_dirichlet_multinomial(counts)
    proportions = counts / counts.sum(axis=1, keepdims=True)
    return ClassRecipe(
        alpha=alpha.tolist(),
        mean_proportions=(alpha / alpha.sum()).tolist(),
        dirichlet_fit=method,
        bag_size=BagSizeModel.fit(sizes),
        cohort=cohort,
        patients=list(patients),
        patient_proportions=np.asarray(proportions).tolist(),
    )
