"""What the machine can do, measured in the harness's own process: load, matmul throughput, memory bandwidth.

Every harness prints the load average next to its figures (a figure measured while other work shared the cores is
not a result) and a compute-bound estimate: the work of the timed step (floating-point operations, or bytes moved
for steps that only gather and copy) divided by what this machine measurably does per second, so a reader sees how
far a figure is from the limit. The throughputs are measured here, with the threads the harness itself uses.
"""

from __future__ import annotations

import os
import time

import numpy as np


def load_note() -> str:
    """The machine's load average next to a figure."""
    one, five, fifteen = os.getloadavg()
    return f"[load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min), {os.cpu_count()} CPUs]"


def _best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_gflops(dtype: str = "float32", n: int = 2048, repeats: int = 5, backend: str = "torch") -> float:
    """Best-of ``repeats`` throughput of an ``n x n`` matrix product, in GFLOP/s (2 n^3 operations).

    ``backend="torch"`` measures torch's CPU kernels (the MIL and GMM engines), ``"numpy"`` numpy's BLAS (what
    scikit-learn uses).
    """
    if backend == "torch":
        import torch

        a = torch.randn(n, n, dtype=getattr(torch, dtype))
        b = torch.randn(n, n, dtype=getattr(torch, dtype))
        seconds = _best_of(lambda: a @ b, repeats)
    else:
        rng = np.random.default_rng(0)
        a = rng.normal(size=(n, n)).astype(dtype)
        b = rng.normal(size=(n, n)).astype(dtype)
        seconds = _best_of(lambda: a @ b, repeats)
    return 2 * n**3 / seconds / 1e9


def copy_gbs(mib: int = 512, repeats: int = 3) -> float:
    """Best-of ``repeats`` memory bandwidth of a large array copy, in GB/s (bytes read + bytes written)."""
    src = np.ones(mib * 2**20 // 8)
    dst = np.empty_like(src)
    seconds = _best_of(lambda: np.copyto(dst, src), repeats)
    return 2 * src.nbytes / seconds / 1e9


def bound_note(
    seconds: float,
    *,
    flops: float | None = None,
    gflops: float | None = None,
    nbytes: float | None = None,
    gbs: float | None = None,
) -> str:
    """``measured / bound`` for a step of ``flops`` operations at ``gflops`` (or ``nbytes`` moved at ``gbs``)."""
    if flops is not None and gflops:
        bound = flops / (gflops * 1e9)
        what = f"{flops / 1e9:.1f} GFLOP at {gflops:.0f} GFLOP/s"
    elif nbytes is not None and gbs:
        bound = nbytes / (gbs * 1e9)
        what = f"{nbytes / 1e9:.2f} GB moved at {gbs:.1f} GB/s"
    else:
        return "(no bound)"
    return f"compute-bound estimate {bound:.3f} s ({what}): measured is {seconds / bound:.1f}x the bound"
