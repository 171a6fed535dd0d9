"""Figures for the summary and the report."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from recipe_mil.io.atomic import atomic_path  # noqa: E402


def plot_metrics(summary: pd.DataFrame, path: str | os.PathLike[str], *, metric: str = "balanced_accuracy") -> None:
    """Per dataset: ``metric`` by method on ``full`` and as a curve over n per class on ``low_data``.

    Parameters
    ----------
    summary
        The per-run summary table.
    path
        PNG destination (written atomically).
    metric
        Column to plot.
    """
    datasets = sorted(summary["dataset"].unique())
    methods = sorted(summary["method"].unique())
    fig, axes = plt.subplots(len(datasets), 2, figsize=(10, 3.6 * len(datasets)), squeeze=False)
    for row, ds in zip(axes, datasets, strict=True):
        d = summary[summary["dataset"] == ds]
        full = d[d["scenario"] == "full"]
        stats = full.groupby("method")[metric].agg(["mean", "std"]).reindex(methods)
        row[0].bar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), capsize=4, color="#7aa6c2")
        for i, m in enumerate(methods):
            vals = full.loc[full["method"] == m, metric]
            row[0].scatter(np.full(len(vals), i), vals, color="k", s=10, zorder=3)
        row[0].set(title=f"{ds}: full", ylabel=metric.replace("_", " "), ylim=(0, 1.05))
        low = d[d["scenario"] == "low_data"]
        for m in methods:
            s = low[low["method"] == m].groupby("n_per_class")[metric].agg(["mean", "std"])
            if len(s):
                row[1].errorbar(s.index, s["mean"], yerr=s["std"].fillna(0), marker="o", capsize=3, label=m)
        if len(full):
            for m, val in full.groupby("method")[metric].mean().items():
                row[1].axhline(val, ls=":", lw=1, color="grey")
                row[1].annotate(f"full {m}", (1.0, val), xycoords=("axes fraction", "data"), fontsize=7, ha="right")
        if len(low):
            row[1].set_xticks(sorted(low["n_per_class"].dropna().astype(int).unique()))
        row[1].set(title=f"{ds}: low data", xlabel="real training patients per class", ylim=(0, 1.05))
        if len(low):
            row[1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
