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
    save_figure(fig, path)


def save_figure(fig: plt.Figure, path: str | os.PathLike[str]) -> None:
    """Lay out ``fig``, write it as PNG atomically and close it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_recipes(recipes: dict, path: str | os.PathLike[str]) -> None:
    """Heatmap of class x cluster mean proportions, with each class's patients beside it.

    Parameters
    ----------
    recipes
        Class -> :class:`~recipe_mil.recipes.recipes.ClassRecipe`.
    path
        PNG destination.
    """
    classes = sorted(recipes)
    means = np.array([recipes[c].mean_proportions for c in classes])
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.8 + 0.55 * len(classes) + 2), gridspec_kw={"width_ratios": [1, 1.4]})
    im = axes[0].imshow(means, cmap="viridis", aspect="auto", vmin=0)
    axes[0].set(
        yticks=range(len(classes)),
        yticklabels=[f"{c} ({recipes[c].cohort})" for c in classes],
        xlabel="GMM cluster",
        title="recipe: Dirichlet mean proportions",
    )
    for i, j in np.ndindex(means.shape):
        axes[0].text(j, i, f"{means[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    rows, labels = [], []
    for c in classes:
        rows += recipes[c].patient_proportions
        labels += [c] * len(recipes[c].patient_proportions)
    axes[1].imshow(np.array(rows), cmap="viridis", aspect="auto", vmin=0)
    ticks = np.cumsum([0] + [len(recipes[c].patient_proportions) for c in classes])
    axes[1].set(
        yticks=(ticks[:-1] + ticks[1:] - 1) / 2,
        yticklabels=classes,
        xlabel="GMM cluster",
        title="patients the recipes were learned from",
    )
    for t in ticks[1:-1]:
        axes[1].axhline(t - 0.5, color="w", lw=1.5)
    save_figure(fig, path)


def plot_pool_umap(
    pool_x: np.ndarray,
    obs: pd.DataFrame,
    synthetic_rows: np.ndarray,
    path: str | os.PathLike[str],
    *,
    max_points: int = 3000,
    seed: int = 0,
) -> None:
    """UMAP of the pool coloured by cluster, by class, and by real vs synthetic membership.

    Parameters
    ----------
    pool_x
        The GMM-space embedding of the pool (``obsm['X_gmm']``).
    obs
        Pool ``obs`` (``cluster``, ``label``, ``cohort``).
    synthetic_rows
        Pool rows used by synthetic bags (with multiplicity).
    path
        PNG destination.
    max_points
        Seeded subsample of the pool for the embedding.
    seed
        Random seed.
    """
    import umap  # noqa: PLC0415 - heavy import only where a plot is made

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(pool_x), size=min(max_points, len(pool_x)), replace=False))
    xy = umap.UMAP(n_neighbors=15, min_dist=0.3, random_state=seed, n_epochs=150).fit_transform(pool_x[idx])
    used = np.bincount(synthetic_rows, minlength=len(pool_x))[idx]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    panels = [
        ("GMM cluster", obs["cluster"].to_numpy()[idx]),
        ("class (cohort)", (obs["label"].astype(str) + " (" + obs["cohort"].astype(str) + ")").to_numpy()[idx]),
    ]
    for ax, (title, values) in zip(axes[:2], panels, strict=True):
        for v in sorted(set(values), key=str):
            m = values == v
            ax.scatter(xy[m, 0], xy[m, 1], s=3, label=str(v))
        ax.set(title=title, xticks=[], yticks=[])
        ax.legend(markerscale=4, fontsize=7, loc="best")
    order = np.argsort(used)
    sc = axes[2].scatter(xy[order, 0], xy[order, 1], c=used[order], s=3, cmap="magma_r")
    axes[2].set(title="times reused in recipe synthetic bags", xticks=[], yticks=[])
    fig.colorbar(sc, ax=axes[2], shrink=0.8)
    save_figure(fig, path)


def plot_uncertainty(scores: dict[str, np.ndarray], labels: np.ndarray, selected: np.ndarray, path: str) -> None:
    """Histograms of BALD, entropy and own-class probability of the candidates, selected ones highlighted."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key in zip(axes, ("bald", "entropy", "p_label"), strict=True):
        v = scores[key]
        bins = np.linspace(v.min(), v.max() + 1e-9, 25)
        ax.hist(v, bins=bins, color="#bbbbbb", label="all candidates")
        ax.hist(v[selected], bins=bins, color="#d95f02", alpha=0.8, label="selected")
        ax.set(title=key.replace("_", " "), ylabel="synthetic patients")
    axes[0].legend(fontsize=8)
    save_figure(fig, path)


def plot_attention(attention: pd.DataFrame, predictions: pd.DataFrame, path: str, *, top: int = 5) -> None:
    """Per test patient: sorted attention over its instances and the ids of the top instances."""
    patients = list(predictions["patient"])[:12]
    ncol = 4
    nrow = int(np.ceil(len(patients) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 2.6 * nrow), squeeze=False)
    for ax, p in zip(axes.flat, patients, strict=False):
        a = attention[attention["patient"] == p].sort_values("attention", ascending=False)
        ax.plot(np.arange(len(a)), a["attention"].to_numpy(), lw=1)
        row = predictions[predictions["patient"] == p].iloc[0]
        ax.set_title(f"{p}: {row['label']} → {row['predicted']}", fontsize=8)
        text = "\n".join(f"{i}: {v:.3f}" for i, v in zip(a["instance_id"][:top], a["attention"][:top], strict=True))
        ax.text(0.98, 0.95, text, transform=ax.transAxes, ha="right", va="top", fontsize=6, family="monospace")
        ax.set(xlabel="instance (by attention)", ylabel="attention")
    for ax in list(axes.flat)[len(patients) :]:
        ax.axis("off")
    save_figure(fig, path)


def plot_realism(realism: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Per dataset and scenario: bag-level MMD² and C2ST of each method's synthetic patients vs the real reference."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    if realism.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no realism scores", ha="center")
        save_figure(fig, path)
        return
    r = realism.assign(group=realism["dataset"] + " / " + realism["scenario"])
    for ax, (metric, ref) in zip(axes, (("mmd_bag", "mmd_bag_ref"), ("c2st", "c2st_ref")), strict=True):
        stats = r.groupby(["group", "method"])[[metric, ref]].mean().reset_index()
        groups, methods = sorted(stats["group"].unique()), sorted(stats["method"].unique())
        width = 0.8 / (len(methods) + 1)
        for i, m in enumerate(methods):
            vals = stats[stats["method"] == m].set_index("group").reindex(groups)[metric]
            ax.bar(np.arange(len(groups)) + i * width, vals, width, label=m)
        refs = stats.groupby("group")[ref].mean().reindex(groups)
        ax.bar(np.arange(len(groups)) + len(methods) * width, refs, width, color="k", alpha=0.4, label="real (ref)")
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=20, ha="right", fontsize=7)
        ax.set(title=metric.replace("_", " ") + " vs held-out real bags (lower = more realistic)")
    axes[1].axhline(0.5, color="grey", ls=":")
    axes[1].legend(fontsize=7)
    save_figure(fig, path)


def plot_attention_thumbnails(
    attention: pd.DataFrame,
    predictions: pd.DataFrame,
    folders: dict[str, str],
    path: str | os.PathLike[str],
    *,
    top: int = 6,
    max_patients: int = 8,
) -> None:
    """Show the top-attention crops of each test patient as thumbnails (image datasets).

    Parameters
    ----------
    attention
        ``patient, instance_id, attention`` (instance ids are crop file names).
    predictions
        ``patient, label, predicted``.
    folders
        Patient -> folder of its crops.
    path
        PNG destination.
    top
        Crops shown per patient.
    max_patients
        Patients shown.
    """
    from PIL import Image  # noqa: PLC0415 - only image datasets need it

    patients = list(predictions["patient"])[:max_patients]
    fig, axes = plt.subplots(len(patients), top, figsize=(1.4 * top, 1.55 * len(patients)), squeeze=False)
    for row, p in zip(axes, patients, strict=True):
        a = attention[attention["patient"] == p].sort_values("attention", ascending=False).head(top)
        pred = predictions[predictions["patient"] == p].iloc[0]
        for j, ax in enumerate(row):
            ax.axis("off")
            if j < len(a):
                item = a.iloc[j]
                with Image.open(os.path.join(folders[p], str(item["instance_id"]))) as im:
                    ax.imshow(np.asarray(im.convert("RGB")))
                ax.set_title(f"{item['attention']:.3f}", fontsize=6)
        row[0].text(
            -0.15,
            0.5,
            f"{p}\n{pred['label']}\n→ {pred['predicted']}",
            transform=row[0].transAxes,
            ha="right",
            va="center",
            fontsize=7,
        )
    save_figure(fig, path)
