"""A Gaussian mixture fitted by EM in torch: chunked, float32 by default, CPU or GPU.

The model follows :class:`sklearn.mixture.GaussianMixture` step for step (same E-step,
M-step, ``reg_covar``, lower bound and stopping rule), so that from the same starting
parameters both reach the same fit; what differs is how the work is done. One pass over
the data per iteration does the E-step and accumulates the M-step's sufficient statistics
chunk by chunk (memory bounded by ``chunk_size``), the per-component products are batched
matrix products, and the arithmetic is float32 with float64 accumulators.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from recipe_mil.device import resolve_device

logger = logging.getLogger(__name__)

COVARIANCE_TYPES = ("full", "diag")
_LOG_2PI = math.log(2.0 * math.pi)
_ILL_DEFINED = (
    "fitting the mixture failed: a component has an ill-defined covariance (a singleton or collapsed "
    "cluster); use fewer components, a larger gmm.reg_covar, or standardised input"
)


class TorchGaussianMixture:
    """Gaussian mixture model fitted by EM in torch.

    Parameters
    ----------
    n_components
        K.
    covariance_type
        ``full`` or ``diag``.
    tol
        EM stops when the mean log-likelihood changes by less than this.
    reg_covar
        Added to the covariance diagonals.
    max_iter
        EM iterations at most (per initialisation).
    n_init
        Initialisations; the one with the highest lower bound is kept.
    weights_init, means_init, precisions_init
        Starting parameters (all three together, in sklearn's layout: precisions are
        (K, d, d) matrices for ``full``, (K, d) for ``diag``); else k-means++ then Lloyd.
    kmeans_iter
        Lloyd iterations after the k-means++ seeding.
    random_state
        Seed of the initialisation.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    dtype
        ``float32`` (default) or ``float64``.
    chunk_size
        Rows per chunk; default keeps each chunk's work arrays near 64 MiB per array.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_cholesky_
        Fitted parameters as float64 numpy arrays, in sklearn's layout.
    converged_, n_iter_, lower_bound_
        As in sklearn.
    """

    def __init__(
        self,
        n_components: int,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        weights_init: np.ndarray | None = None,
        means_init: np.ndarray | None = None,
        precisions_init: np.ndarray | None = None,
        kmeans_iter: int = 20,
        random_state: int = 0,
        device: str = "auto",
        dtype: str = "float32",
        chunk_size: int | None = None,
    ) -> None:
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        inits = (weights_init, means_init, precisions_init)
        if any(v is not None for v in inits) and any(v is None for v in inits):
            raise ValueError("weights_init, means_init and precisions_init must be given together")
        self.n_components = int(n_components)
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.weights_init, self.means_init, self.precisions_init = inits
        self.kmeans_iter = kmeans_iter
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.chunk_size = chunk_size

    # -- helpers -----------------------------------------------------------------
    @property
    def _torch_dtype(self) -> torch.dtype:
        return torch.float32 if self.dtype == "float32" else torch.float64

    def _chunk(self, d: int) -> int:
        if self.chunk_size:
            return int(self.chunk_size)
        return max(1024, (16 * 2**20) // max(1, self.n_components * d))

    def _to_device(self, x: np.ndarray) -> torch.Tensor:
        dev = resolve_device(self.device)
        return torch.as_tensor(np.ascontiguousarray(x), dtype=self._torch_dtype).to(dev)

    def _set_params(self, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> None:
        """Store float64 parameters and their precision Cholesky factors (sklearn's layout)."""
        self.weights_ = np.asarray(weights, dtype=np.float64)
        self.means_ = np.asarray(means, dtype=np.float64)
        self.covariances_ = np.asarray(covariances, dtype=np.float64)
        if self.covariance_type == "full":
            cov = torch.as_tensor(self.covariances_)
            chol, info = torch.linalg.cholesky_ex(cov)
            if bool((info != 0).any()):
                raise ValueError(_ILL_DEFINED)
            eye = torch.eye(cov.shape[-1], dtype=cov.dtype).expand_as(cov)
            self.precisions_cholesky_ = torch.linalg.solve_triangular(chol, eye, upper=False).mT.numpy()
            self._chol = chol.numpy()
        else:
            if (self.covariances_ <= 0).any():
                raise ValueError(_ILL_DEFINED)
            self.precisions_cholesky_ = 1.0 / np.sqrt(self.covariances_)

    def _set_from_precisions(self, weights: np.ndarray, means: np.ndarray, precisions: np.ndarray) -> None:
        prec = np.asarray(precisions, dtype=np.float64)
        cov = np.linalg.inv(prec) if self.covariance_type == "full" else 1.0 / prec
        self._set_params(weights, means, cov)

    def _device_params(self, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return log weights, means, precision factors and log-determinants on the device."""
        dt = self._torch_dtype
        logw = torch.as_tensor(np.log(self.weights_), dtype=dt, device=dev)
        mu = torch.as_tensor(self.means_, dtype=dt, device=dev)
        pc = torch.as_tensor(self.precisions_cholesky_, dtype=dt, device=dev)
        if self.covariance_type == "full":
            logdet = torch.as_tensor(
                np.log(np.diagonal(self.precisions_cholesky_, axis1=1, axis2=2)).sum(1), dtype=dt, device=dev
            )
        else:
            logdet = torch.as_tensor(np.log(self.precisions_cholesky_).sum(1), dtype=dt, device=dev)
        return logw, mu, pc, logdet

    @staticmethod
    def _whiten(x: torch.Tensor, mu: torch.Tensor, pc: torch.Tensor, full: bool) -> torch.Tensor:
        """``(x - mu_k) @ P_k`` for every component, shape (K, c, d): one batched product."""
        k, d = mu.shape
        if full:
            return torch.baddbmm(-torch.einsum("kd,kde->ke", mu, pc)[:, None, :], x.expand(k, -1, d), pc)
        return (x[None, :, :] - mu[:, None, :]) * pc[:, None, :]

    @staticmethod
    def _log_prob_from_whitened(y: torch.Tensor, logw: torch.Tensor, logdet: torch.Tensor) -> torch.Tensor:
        """Return log w_k + log N(x | mu_k, Sigma_k) from whitened rows, shape (c, K)."""
        maha = torch.linalg.vector_norm(y, dim=-1).square().T
        return -0.5 * (y.shape[-1] * _LOG_2PI + maha) + logdet + logw

    def _iterate(self, x: torch.Tensor) -> float:
        """One fused pass: E-step with the current parameters, M-step statistics, new parameters.

        The second moments are accumulated in the whitened space of the current parameters
        (``y = (x - mu_k) P_k``, already computed by the E-step) and mapped back with the
        current Cholesky factor, then re-centred on the new means: the same covariance as
        sklearn's, without a second pass or a centred copy per component.

        Returns the mean log-likelihood under the parameters before the update (sklearn's
        lower bound for this iteration).
        """
        n, d = x.shape
        full = self.covariance_type == "full"
        logw, mu, pc, logdet = self._device_params(x.device)
        k = len(mu)
        f64 = torch.float64
        ll = torch.zeros((), dtype=f64, device=x.device)
        nk = torch.zeros(k, dtype=f64, device=x.device)
        sx = torch.zeros(k, d, dtype=f64, device=x.device)
        syy = torch.zeros((k, d, d) if full else (k, d), dtype=f64, device=x.device)
        for xc in torch.split(x, self._chunk(d)):
            y = self._whiten(xc, mu, pc, full)
            lp = self._log_prob_from_whitened(y, logw, logdet)
            lse = torch.logsumexp(lp, dim=1)
            r = torch.exp(lp - lse[:, None])
            ll += lse.sum(dtype=f64)
            nk += r.sum(0, dtype=f64)
            sx += (r.T @ xc).to(f64)
            y.mul_(r.T.sqrt()[:, :, None])
            syy += (torch.bmm(y.transpose(1, 2), y) if full else y.square().sum(1)).to(f64)
        # back from whitened coordinates: sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T
        pc64 = torch.as_tensor(self.precisions_cholesky_, dtype=f64, device=x.device)
        if full:
            chol = torch.as_tensor(self._chol, dtype=f64, device=x.device)
            sxx = chol @ syy @ chol.mT
        else:
            sxx = syy / pc64.square()
        eps = 10 * torch.finfo(self._torch_dtype).eps
        resp_sum = nk.clone()
        nk = nk + eps
        mu_old = mu.to(f64)
        means = sx / nk[:, None]
        delta = means - mu_old
        u = sx - resp_sum[:, None] * mu_old  # sum_n r_nk (x_n - mu_old_k)
        if full:
            cov = sxx - u[:, :, None] * delta[:, None, :] - delta[:, :, None] * u[:, None, :]
            cov = cov + resp_sum[:, None, None] * delta[:, :, None] * delta[:, None, :]
            cov = cov / nk[:, None, None] + self.reg_covar * torch.eye(d, dtype=f64, device=x.device)
        else:
            cov = (sxx - 2 * u * delta + resp_sum[:, None] * delta.square()) / nk[:, None] + self.reg_covar
        self._set_params((nk / nk.sum()).cpu().numpy(), means.cpu().numpy(), cov.cpu().numpy())
        return float(ll) / n

    # -- initialisation ----------------------------------------------------------
    def _kmeans(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """k-means++ seeding (greedy, 2 + log K local trials) then Lloyd; returns labels."""
        n, _ = x.shape
        k = self.n_components
        step = self._chunk(x.shape[1])

        xn = x.square().sum(1)  # row norms once, not once per distance computation

        def sqdist(centres: torch.Tensor) -> torch.Tensor:
            """Squared distances of every row to each centre, (n, m), in blocks of about 32M entries."""
            c2 = centres.square().sum(1)
            rows = max(step, 2**25 // max(1, len(centres)))
            out = [
                torch.addmm(c2, xc, centres.T, alpha=-2).add_(nc[:, None]).clamp_min_(0)
                for xc, nc in zip(torch.split(x, rows), torch.split(xn, rows), strict=True)
            ]
            return out[0] if len(out) == 1 else torch.cat(out)

        trials = 2 + int(math.log(k))
        first = int(rng.integers(n))
        centres = x[first : first + 1]
        closest = sqdist(centres)[:, 0]
        for _ in range(1, k):
            p = closest.double().cpu().numpy()
            total = p.sum()
            if total <= 0:
                cand = rng.integers(n, size=trials)
            else:
                cand = np.minimum(np.searchsorted(np.cumsum(p), rng.random(trials) * total), n - 1)
            dist = torch.minimum(closest[:, None], sqdist(x[torch.as_tensor(cand, device=x.device)]))
            best = int(torch.argmin(dist.sum(0, dtype=torch.float64)))
            centres = torch.cat([centres, x[int(cand[best]) : int(cand[best]) + 1]])
            closest = dist[:, best]
        labels = torch.argmin(sqdist(centres), dim=1)
        for _ in range(self.kmeans_iter):
            counts = torch.bincount(labels, minlength=k).to(x.dtype)
            sums = torch.nn.functional.one_hot(labels, k).to(x.dtype).T @ x  # a product, not a scatter
            centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
            new = torch.argmin(sqdist(centres), dim=1)
            if torch.equal(new, labels):
                break
            labels = new
        return labels

    def _init_from_labels(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Set the parameters from hard assignments, as sklearn's initialisation from k-means labels."""
        k, d = self.n_components, x.shape[1]
        f64 = torch.float64
        order = torch.argsort(labels)  # rows grouped by cluster: contiguous slices, no masks
        sizes = torch.bincount(labels, minlength=k).tolist()
        counts = torch.tensor(sizes, dtype=f64, device=x.device) + 10 * torch.finfo(self._torch_dtype).eps
        means = torch.zeros(k, d, dtype=f64, device=x.device)
        cov = torch.zeros((k, d, d) if self.covariance_type == "full" else (k, d), dtype=f64, device=x.device)
        for j, rows in enumerate(torch.split(order, sizes)):
            xj = x[rows].to(f64)
            means[j] = xj.sum(0) / counts[j]
            dj = xj - means[j]
            cov[j] = (dj.T @ dj if self.covariance_type == "full" else dj.square().sum(0)) / counts[j]
        cov = cov + self.reg_covar * (torch.eye(d, dtype=f64, device=x.device) if cov.dim() == 3 else 1.0)
        self._set_params((counts / counts.sum()).cpu().numpy(), means.cpu().numpy(), cov.cpu().numpy())

    # -- public API --------------------------------------------------------------
    def fit(self, x: np.ndarray) -> TorchGaussianMixture:
        """Fit by EM (``n_init`` starts, the best lower bound kept).

        Parameters
        ----------
        x
            Data, shape (n, d).

        Returns
        -------
        TorchGaussianMixture
            self.
        """
        if x.ndim != 2 or len(x) < self.n_components:
            raise ValueError(f"GMM with K={self.n_components} needs a 2-d array with at least K rows, got {x.shape}")
        xt = self._to_device(x)
        rng = np.random.default_rng(self.random_state)
        best: tuple[float, dict[str, object]] | None = None
        for init in range(self.n_init):
            if self.means_init is not None:
                self._set_from_precisions(self.weights_init, self.means_init, self.precisions_init)
            else:
                self._init_from_labels(xt, self._kmeans(xt, rng))
            lower, converged, n_iter = -np.inf, False, 0
            while n_iter < self.max_iter and not converged:
                prev, lower = lower, self._iterate(xt)
                n_iter += 1
                converged = abs(lower - prev) < self.tol
            logger.info(
                "torch GMM K=%d init %d: %d iterations, lower bound %.4f%s",
                self.n_components,
                init,
                n_iter,
                lower,
                "" if converged else " (not converged)",
            )
            if best is None or lower > best[0]:
                state = {k: getattr(self, k) for k in ("weights_", "means_", "covariances_", "precisions_cholesky_")}
                best = (lower, {**state, "converged_": converged, "n_iter_": n_iter})
        assert best is not None
        self.lower_bound_ = best[0]
        for key, value in best[1].items():
            setattr(self, key, value)
        if not self.converged_:
            logger.warning("torch GMM K=%d did not converge in %d iterations", self.n_components, self.max_iter)
        return self

    def _log_prob_chunks(self, x: np.ndarray) -> torch.Tensor:
        xt = self._to_device(x)
        logw, mu, pc, logdet = self._device_params(xt.device)
        full = self.covariance_type == "full"
        return torch.cat(
            [
                self._log_prob_from_whitened(self._whiten(xc, mu, pc, full), logw, logdet)
                for xc in torch.split(xt, self._chunk(x.shape[1]))
            ]
        )

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        """Log-likelihood of each row, float64."""
        return torch.logsumexp(self._log_prob_chunks(x), dim=1).double().cpu().numpy()

    def score(self, x: np.ndarray) -> float:
        """Mean log-likelihood of the rows."""
        return float(self.score_samples(x).mean())

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Responsibilities, shape (n, K), float64."""
        return torch.softmax(self._log_prob_chunks(x).double(), dim=1).cpu().numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Most responsible component of each row."""
        return torch.argmax(self._log_prob_chunks(x), dim=1).cpu().numpy()

    def _n_parameters(self) -> int:
        k, d = self.means_.shape
        cov = k * d * (d + 1) // 2 if self.covariance_type == "full" else k * d
        return int(cov + k * d + k - 1)

    def bic(self, x: np.ndarray) -> float:
        """Bayesian information criterion on ``x`` (lower is better), as sklearn."""
        return -2 * self.score(x) * len(x) + self._n_parameters() * math.log(len(x))

    @property
    def precisions_(self) -> np.ndarray:
        """Precision matrices (full) or per-feature precisions (diag)."""
        pc = self.precisions_cholesky_
        return pc @ np.transpose(pc, (0, 2, 1)) if self.covariance_type == "full" else pc**2
