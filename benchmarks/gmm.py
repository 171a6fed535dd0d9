"""GMM engine speed: recipe_mil's torch EM against scikit-learn's ``GaussianMixture``, same start.

Draws N training rows (and N/5 held-out rows) from a random K-component Gaussian mixture in D
dimensions (random means and full covariances), computes one starting point with recipe_mil's
k-means++ initialisation, then runs exactly ``--iters`` EM iterations (``tol=0``) with both engines
from that same start (sklearn gets it through ``weights_init``/``means_init``/``precisions_init``):
sklearn in float64 as it is used, ours in float32 on the CPU (and, where CUDA is present, on the GPU).
Prints the seconds per EM iteration of each, both held-out mean log-likelihoods (ours must be at
least as good within float32 noise), and, for context, the time of each engine's own initialisation
(sklearn's k-means, ours k-means++ + Lloyd). The last line is sklearn's EM time over ours on the CPU.

OpenBLAS variables that select a slower kernel on this machine (``OPENBLAS_CORETYPE``,
``OPENBLAS_L2_SIZE``) are removed before numpy loads, so scikit-learn runs on its best kernel.

Run: ``python benchmarks/gmm.py [--n 500000] [--d 64] [--k 32] [--iters 5]``.
"""

from __future__ import annotations

import os
import sys

if any(v in os.environ for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _machine import bound_note, load_note, matmul_gflops  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

from recipe_mil.recipes.gmm_torch import TorchGaussianMixture  # noqa: E402


def simulate(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out rows from a random full-covariance mixture."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, size=(k, d))
    factors = rng.normal(0, 1, size=(k, d, d)) / np.sqrt(d) + 0.3 * np.eye(d)
    weights = rng.dirichlet(np.full(k, 5.0))
    comp = rng.choice(k, size=n + n // 5, p=weights)
    x = rng.normal(size=(len(comp), d))
    for j in range(k):  # component by component: no (n, d, d) temporary
        rows = comp == j
        x[rows] = means[j] + x[rows] @ factors[j]
    return x[:n], x[n:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    blas = [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpool_info()]
    print(f"machine: {os.cpu_count()} CPUs; torch threads {torch.get_num_threads()}; BLAS {blas}")
    x, held = simulate(args.n, args.d, args.k, args.seed)
    print(f"data: N={args.n} D={args.d} K={args.k} full covariance, {len(held)} held-out rows")

    t = time.perf_counter()
    start = TorchGaussianMixture(args.k, max_iter=0, reg_covar=1e-6, random_state=args.seed, device="cpu").fit(x)
    t_ours_init = time.perf_counter() - t
    init = {"weights_init": start.weights_, "means_init": start.means_, "precisions_init": start.precisions_}
    t = time.perf_counter()
    KMeans(args.k, n_init=1, random_state=args.seed).fit(x)
    t_sk_init = time.perf_counter() - t
    print(f"initialisation: sklearn k-means {t_sk_init:.1f} s; ours k-means++ + Lloyd {t_ours_init:.1f} s (context)")

    opts = {"covariance_type": "full", "tol": 0.0, "max_iter": args.iters, "reg_covar": 1e-6}
    sk = GaussianMixture(args.k, init_params="random_from_data", random_state=args.seed, **opts, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t = time.perf_counter()
        sk.fit(x)
        t_sk = time.perf_counter() - t
    ours = TorchGaussianMixture(args.k, device="cpu", **opts, **init)
    t = time.perf_counter()
    ours.fit(x)
    t_ours = time.perf_counter() - t
    assert sk.n_iter_ == ours.n_iter_ == args.iters
    ll_sk, ll_ours = sk.score(held), ours.score(held)
    print(f"sklearn (float64): {t_sk:.1f} s for {args.iters} EM iterations ({t_sk / args.iters:.2f} s/iteration)")
    print(f"ours (float32, cpu): {t_ours:.1f} s ({t_ours / args.iters:.2f} s/iteration) {load_note()}")
    # an EM iteration with full covariances is two batched products per component: whitening (x - mu_k) P_k and
    # the responsibility-weighted second moments, 2 N D^2 operations each (the rest is O(N K D))
    flops = 4 * args.n * args.k * args.d**2
    f64, f32 = matmul_gflops("float64", backend="numpy"), matmul_gflops("float32")
    print(f"sklearn per iteration: {bound_note(t_sk / args.iters, flops=flops, gflops=f64)} (numpy float64 matmul)")
    print(f"ours per iteration: {bound_note(t_ours / args.iters, flops=flops, gflops=f32)} (torch float32 matmul)")
    print(f"held-out mean log-likelihood: sklearn {ll_sk:.6f}, ours {ll_ours:.6f} (difference {ll_ours - ll_sk:+.2e})")
    if torch.cuda.is_available():
        gpu = TorchGaussianMixture(args.k, device="cuda", **opts, **init)
        gpu.fit(x[:1000])  # warm-up
        t = time.perf_counter()
        gpu.fit(x)
        torch.cuda.synchronize()
        t_gpu = time.perf_counter() - t
        print(f"ours (float32, {torch.cuda.get_device_name()}): {t_gpu:.2f} s; held-out {gpu.score(held):.6f}")
        print(f"gmm_speedup_vs_sklearn_gpu: {t_sk / t_gpu:.1f}")
    print(f"gmm_speedup_vs_sklearn: {t_sk / t_ours:.1f}")


if __name__ == "__main__":
    main()
