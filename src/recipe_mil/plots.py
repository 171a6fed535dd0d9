"""Figures for the summary and the report.

Every figure is written twice: a PNG for the report and a vector copy (SVG, same name) beside it, for papers
(:func:`save_figure`). Every method has one colour in every figure (:func:`method_colours`, fixed by the method
registry's order, so ``recipe`` is the same colour in the metrics, the differences and the realism figures of
every study), and ``real_only``, the reference, is dark grey and hatched.

Importing it leaves matplotlib's backend alone (a notebook keeps its own); the rule scripts draw with the
non-interactive ``Agg`` backend (``MPLBACKEND``, set by ``workflow/scripts/_common.py``), as does matplotlib
wherever there is no display.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from recipe_mil.evaluate import scenario_columns, with_labels
from recipe_mil.io.atomic import atomic_path
from recipe_mil.methods import METHODS, REFERENCE

#: the reference method's colour (``real_only``)
REFERENCE_COLOUR = "#3b3b3b"
#: colours of the other methods, in registry order (matplotlib's tab10 without its grey)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
#: the hatch that marks the reference's bars
REFERENCE_HATCH = "//"


def method_colours(methods: Iterable[str] = ()) -> dict[str, str]:
    """Return one colour per method, the same in every figure.

    Parameters
    ----------
    methods
        Further method names (not in the registry) to give a colour to, after the registry's.

    Returns
    -------
    dict
        Method -> colour: :data:`REFERENCE_COLOUR` for ``real_only``, then :data:`PALETTE` in registry order.
    """
    others = dict.fromkeys(m for m in [*METHODS, *methods] if m != REFERENCE)
    return {REFERENCE: REFERENCE_COLOUR} | {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(others)}


def method_label(method: str) -> str:
    """Return the name a legend shows: ``real_only (reference)`` for the reference, the method's name otherwise."""
    return f"{method} (reference)" if method == REFERENCE else method


def ordered_methods(methods: Iterable[str]) -> list[str]:
    """Return the distinct ``methods`` in registry order (unknown names last, sorted)."""
    present = set(methods)
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def _legend(fig: plt.Figure, methods: list[str], *, extra: list | None = None) -> None:
    colours = method_colours(methods)
    handles = [
        Patch(facecolor=colours[m], hatch=REFERENCE_HATCH if m == REFERENCE else None, label=method_label(m))
        for m in methods
    ]
    fig.legend(handles=handles + (extra or []), loc="outside right upper", fontsize=8, title="method")


def _wrap(label: str) -> str:
    """Put a scenario's detail (in brackets) on a second line of its label."""
    return label.replace(" (", "\n(")


def _bar(ax: plt.Axes, x: float, height: float, width: float, method: str, **kwargs) -> None:
    ax.bar(
        x,
        height,
        width,
        color=method_colours([method])[method],
        hatch=REFERENCE_HATCH if method == REFERENCE else None,
        edgecolor="white",
        linewidth=0.5,
        **kwargs,
    )


def _chance(ax: plt.Axes, level: float) -> None:
    ax.axhline(level, color="grey", ls=":", lw=1.2, zorder=0)


def _chance_handle(label: str) -> plt.Line2D:
    return plt.Line2D([], [], color="grey", ls=":", lw=1.2, label=label)


def save_figure(fig: plt.Figure, path: str | os.PathLike[str]) -> None:
    """Lay out ``fig``, write it as PNG (``path``) and as SVG beside it (:func:`vector_path`), atomically; close it."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    with plt.rc_context({"svg.hashsalt": "recipe-mil"}):  # stable element ids: same figure, same file
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        with atomic_path(vector_path(path)) as tmp:
            fig.savefig(tmp, format="svg", metadata={"Date": None})
    plt.close(fig)


def vector_path(path: str | os.PathLike[str]) -> Path:
    """Return the vector copy of a figure: the PNG's path with ``.svg``."""
    return Path(path).with_suffix(".svg")


def _chance_levels(recall: pd.DataFrame | None) -> dict[str, int]:
    """Classes per dataset (those its test patients have), from the recall table."""
    if recall is None or recall.empty:
        return {}
    return recall.groupby("dataset")["class"].nunique().to_dict()


def metrics_figure(
    summary: pd.DataFrame, recall: pd.DataFrame | None = None, *, metric: str = "balanced_accuracy"
) -> plt.Figure:
    """Per dataset: ``metric`` of every method in every scenario, and the missing class's recall where one is missing.

    Parameters
    ----------
    summary
        The per-run summary table (``summary.tsv``).
    recall
        Recall per run and class (``recall.tsv``): gives the chance level (1 / number of classes) and the
        recall of the class missing from training in each ``missing_class`` scenario.
    metric
        Column to plot.

    Returns
    -------
    matplotlib.figure.Figure
        One row per dataset. Left: bars = mean over runs, error bars = sd over runs, dots = train/test splits
        (seeds and low-data draws averaged); ``real_only`` hatched, with a dashed line at its mean across the
        scenario's bars. Right: the recall of the missing class per method. Dotted: chance.
    """
    s = with_labels(summary)
    r = with_labels(recall) if recall is not None and len(recall) else None
    n_classes = _chance_levels(recall)
    datasets = list(dict.fromkeys(s["dataset"]))
    methods = ordered_methods(s["method"])
    widest = max(len(ordered_methods(g["method"])) for _, g in s.groupby(["dataset", "label"]))
    n_groups = max(s.groupby("dataset")["label"].nunique())
    has_missing = (s["scenario"] == "missing_class").any()
    n_missing = max(
        (g["label"].nunique() for _, g in s[s["scenario"] == "missing_class"].groupby("dataset")), default=0
    )
    per_group = max(1.6, 0.32 * widest)
    widths = [per_group * n_groups + 1.0] + ([per_group * n_missing + 1.0] if has_missing else [])
    fig, axes = plt.subplots(
        len(datasets),
        len(widths),
        figsize=(sum(widths) + 2.6, 3.9 * len(datasets)),
        squeeze=False,
        width_ratios=widths,
        layout="constrained",
    )
    for row, ds in zip(axes, datasets, strict=True):
        d = s[s["dataset"] == ds]
        groups = list(dict.fromkeys(d["label"]))
        ax = row[0]
        for gi, label in enumerate(groups):
            g = d[d["label"] == label]
            present = ordered_methods(g["method"])
            width = 0.8 / len(present)
            for mi, m in enumerate(present):
                x = gi - 0.4 + width * (mi + 0.5)
                vals = g.loc[g["method"] == m]
                _bar(
                    ax,
                    x,
                    vals[metric].mean(),
                    width,
                    m,
                    yerr=vals[metric].std(ddof=1) if len(vals) > 1 else 0,
                    capsize=2,
                    error_kw={"lw": 0.8},
                )
                splits = vals.groupby(["repeat", "fold"])[metric].mean()
                ax.scatter(np.full(len(splits), x), splits, s=9, color="black", zorder=3, linewidths=0)
            ref = g.loc[g["method"] == REFERENCE, metric]
            if len(ref):
                ax.hlines(ref.mean(), gi - 0.45, gi + 0.45, colors=REFERENCE_COLOUR, linestyles="--", lw=1, zorder=4)
        if ds in n_classes:
            _chance(ax, 1 / n_classes[ds])
        ax.set_xticks(range(len(groups)), [_wrap(lab) for lab in groups], fontsize=8)
        ax.set(xlim=(-0.6, len(groups) - 0.4), ylim=(0, 1.05), title=f"{ds}: every scenario", xlabel="scenario")
        ax.set_ylabel(f"{metric.replace('_', ' ')}\n(real test patients)")
        if has_missing:
            _missing_class_recall(row[1], d, r[r["dataset"] == ds] if r is not None else None, n_classes.get(ds))
    _legend(fig, methods, extra=[_chance_handle("chance:\n1 / number of classes")] if n_classes else None)
    return fig


def _missing_class_recall(ax: plt.Axes, d: pd.DataFrame, r: pd.DataFrame | None, n_classes: int | None) -> None:
    """Plot the recall of the class removed from training, per method, in each missing-class scenario of a dataset."""
    miss = d[d["scenario"] == "missing_class"]
    if miss.empty or r is None or r.empty:
        ax.text(0.5, 0.5, "no class is missing\nin this dataset's scenarios", ha="center", va="center", fontsize=8)
        ax.set_axis_off()
        return
    groups = list(dict.fromkeys(miss["label"]))
    for gi, label in enumerate(groups):
        g = r[(r["label"] == label) & (r["class"] == r["missing_class"])]
        present = ordered_methods(g["method"])
        width = 0.8 / max(len(present), 1)
        for mi, m in enumerate(present):
            vals = g.loc[g["method"] == m, "recall"]
            _bar(
                ax,
                gi - 0.4 + width * (mi + 0.5),
                vals.mean(),
                width,
                m,
                yerr=vals.std(ddof=1) if len(vals) > 1 else 0,
                capsize=2,
                error_kw={"lw": 0.8},
            )
    if n_classes:
        _chance(ax, 1 / n_classes)
    ax.set_xticks(range(len(groups)), [_wrap(lab) for lab in groups], fontsize=8)
    ax.set(xlim=(-0.6, len(groups) - 0.4), ylim=(0, 1.05), xlabel="scenario", title="the missing class")
    ax.set_ylabel("recall of the class missing\nfrom training (mean ± sd)")


def plot_metrics(
    summary: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    recall: pd.DataFrame | None = None,
    metric: str = "balanced_accuracy",
) -> None:
    """Write :func:`metrics_figure` to ``path`` (PNG, and SVG beside it)."""
    save_figure(metrics_figure(summary, recall, metric=metric), path)


def differences_figure(comparisons: pd.DataFrame, *, metric: str = "balanced accuracy") -> plt.Figure:
    """Forest plot of the headline: each method's mean difference from ``real_only`` with its 95% interval.

    Parameters
    ----------
    comparisons
        :func:`recipe_mil.evaluate.paired_comparisons` (``comparisons.tsv``).
    metric
        The compared metric's name, for the axis label.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per dataset (rows) and scenario (columns), methods in registry order top to bottom, a shared
        x axis and a line at zero. Filled markers: Holm-adjusted p < 0.05; open markers: not significant. A
        marker without a bar has no interval (a single train/test split).
    """
    if comparisons is None or comparisons.empty:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, f"no comparisons: {REFERENCE} is not among the methods", ha="center", va="center")
        ax.set_axis_off()
        return fig
    c = with_labels(comparisons)
    datasets = list(dict.fromkeys(c["dataset"]))
    methods = ordered_methods(c["method"])
    colours = method_colours(methods)
    ncol = max(c.groupby("dataset")["label"].nunique())
    fig, axes = plt.subplots(
        len(datasets),
        ncol,
        figsize=(3.0 * ncol + 2.4, 0.32 * len(methods) * len(datasets) + 1.6 * len(datasets)),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    y = {m: i for i, m in enumerate(methods)}
    for row, ds in zip(axes, datasets, strict=True):
        d = c[c["dataset"] == ds]
        groups = list(dict.fromkeys(d["label"]))
        for ax, label in zip(row, groups, strict=False):
            for rec in d[d["label"] == label].to_dict("records"):
                lo, hi = rec["mean_diff"] - rec["ci_low"], rec["ci_high"] - rec["mean_diff"]
                sig = np.isfinite(rec["p_holm"]) and rec["p_holm"] < 0.05
                colour = colours[rec["method"]]
                ax.errorbar(
                    rec["mean_diff"],
                    y[rec["method"]],
                    xerr=[[lo], [hi]] if np.isfinite(lo) else None,
                    fmt="o",
                    color=colour,
                    mfc=colour if sig else "white",
                    ms=6,
                    capsize=3,
                    lw=1.5,
                )
            ax.axvline(0, color=REFERENCE_COLOUR, ls="--", lw=1)
            ax.set_title(f"{ds}: {label}", fontsize=9)
            ax.grid(axis="x", color="#e5e5e5", lw=0.6)
            ax.set_xlabel(f"{metric}: method − {REFERENCE}\n(mean, 95% interval)", fontsize=8)
        for ax in row[len(groups) :]:
            ax.set_axis_off()
        row[0].set_ylabel("method")
    axes[0][0].set_yticks(range(len(methods)), methods, fontsize=8)
    axes[0][0].set_ylim(len(methods) - 0.5, -0.5)  # registry order from the top
    marks = [
        plt.Line2D([], [], marker="o", color="grey", mfc="grey", ls="", label="Holm p < 0.05"),
        plt.Line2D([], [], marker="o", color="grey", mfc="white", ls="", label="not significant"),
    ]
    fig.legend(handles=marks, loc="outside lower center", ncols=2, fontsize=8)
    return fig


def plot_differences(comparisons: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write :func:`differences_figure` to ``path`` (PNG, and SVG beside it)."""
    save_figure(differences_figure(comparisons), path)


def realism_figure(realism: pd.DataFrame) -> plt.Figure:
    """Per dataset and scenario: bag-level MMD² and C2ST of each method's synthetic patients vs held-out real bags.

    Bars: mean over folds, low-data draws and classes; the grey bar: the same score for real training (or
    external) patients against the same held-out bags, the reference a synthetic score should come near.
    """
    if realism is None or realism.empty:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, "no realism scores (no method adds synthetic patients)", ha="center", va="center")
        ax.set_axis_off()
        return fig
    r = with_labels(scenario_columns(realism))
    r["group"] = r["dataset"] + "\n" + r["label"].map(_wrap)
    groups = list(dict.fromkeys(r["group"]))
    methods = ordered_methods(r["method"])
    per_group = max(1.6, 0.3 * (len(methods) + 1))
    fig, axes = plt.subplots(2, 1, figsize=(per_group * len(groups) + 4.0, 7.6), layout="constrained")
    panels = (
        ("mmd_bag", "mmd_bag_ref", "MMD² of bag means\nvs held-out real bags (lower: closer)"),
        ("c2st", "c2st_ref", "C2ST balanced accuracy\nvs held-out real bags (0.5: indistinguishable)"),
    )
    for ax, (metric, ref, ylabel) in zip(axes, panels, strict=True):
        for gi, group in enumerate(groups):
            g = r[r["group"] == group]
            present = ordered_methods(g["method"])
            width = 0.8 / (len(present) + 1)
            for mi, m in enumerate(present):
                _bar(ax, gi - 0.4 + width * (mi + 0.5), g.loc[g["method"] == m, metric].mean(), width, m)
            ax.bar(gi + 0.4 - width / 2, g[ref].mean(), width, color="#bdbdbd", edgecolor="white", hatch="..")
        ax.set_xticks(range(len(groups)), groups, fontsize=8)
        ax.set(xlim=(-0.6, len(groups) - 0.4), xlabel="dataset and scenario", ylabel=ylabel)
    _chance(axes[1], 0.5)
    axes[1].set_ylim(0, 1.05)
    real = Patch(facecolor="#bdbdbd", hatch="..", label="real training patients\n(reference)")
    _legend(fig, methods, extra=[real, _chance_handle("C2ST: indistinguishable")])
    return fig


def plot_realism(realism: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write :func:`realism_figure` to ``path`` (PNG, and SVG beside it)."""
    save_figure(realism_figure(realism), path)


def plot_recipes(recipes: dict, path: str | os.PathLike[str]) -> None:
    """Heatmap of class x cluster mean proportions, with each class's patients beside it.

    Parameters
    ----------
    recipes
        Class -> :class:`~recipe_mil.recipes.recipes.ClassRecipe`.
    path
        PNG destination (an SVG copy is written beside it).
    """
    classes = sorted(recipes)
    means = np.array([recipes[c].mean_proportions for c in classes])
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.8 + 0.55 * len(classes) + 2), gridspec_kw={"width_ratios": [1, 1.4]})
    im = axes[0].imshow(means, cmap="viridis", aspect="auto", vmin=0)
    axes[0].set(
        yticks=range(len(classes)),
        yticklabels=[f"{c} ({recipes[c].cohort})" for c in classes],
        xlabel="GMM cluster",
        ylabel="class (cohort it was learned from)",
        title="recipe: Dirichlet mean proportions",
    )
    for i, j in np.ndindex(means.shape):
        axes[0].text(j, i, f"{means[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="proportion of the bag")
    rows = []
    for c in classes:
        rows += recipes[c].patient_proportions
    axes[1].imshow(np.array(rows), cmap="viridis", aspect="auto", vmin=0)
    ticks = np.cumsum([0] + [len(recipes[c].patient_proportions) for c in classes])
    axes[1].set(
        yticks=(ticks[:-1] + ticks[1:] - 1) / 2,
        yticklabels=classes,
        xlabel="GMM cluster",
        ylabel="patients, by class",
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
        PNG destination (an SVG copy is written beside it; its points are rasterised).
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
            ax.scatter(xy[m, 0], xy[m, 1], s=3, label=str(v), rasterized=True)
        ax.legend(markerscale=4, fontsize=7, loc="best", title=title, title_fontsize=7)
        ax.set(title=f"instances by {title}")
    order = np.argsort(used)
    sc = axes[2].scatter(xy[order, 0], xy[order, 1], c=used[order], s=3, cmap="magma_r", rasterized=True)
    axes[2].set(title="times reused in recipe synthetic bags")
    fig.colorbar(sc, ax=axes[2], shrink=0.8, label="synthetic bags using the instance")
    for ax in axes:
        ax.set(xticks=[], yticks=[], xlabel="UMAP 1", ylabel="UMAP 2")
    save_figure(fig, path)


#: the uncertainty scores of :func:`plot_uncertainty`: key -> (title, x axis label)
UNCERTAINTY_SCORES = {
    "bald": ("disagreement between dropout passes (BALD)", "mutual information (nats)"),
    "entropy": ("uncertainty of the prediction (entropy)", "predictive entropy (nats)"),
    "p_label": ("confidence in its own class", "mean probability of the bag's class"),
}


def uncertainty_figure(scores: dict[str, np.ndarray], labels: np.ndarray, selected: np.ndarray) -> plt.Figure:
    """Histograms of the candidates' uncertainty scores, one row per class, the selected ones highlighted.

    Parameters
    ----------
    scores
        ``bald``, ``entropy`` and ``p_label`` per candidate synthetic patient (Monte-Carlo dropout).
    labels
        The class of each candidate.
    selected
        Boolean mask of the candidates the selection policy kept.
    """
    labels = np.asarray(labels).astype(str)
    classes = list(dict.fromkeys(labels))
    fig, axes = plt.subplots(len(classes), 3, figsize=(13, 2.5 * len(classes) + 0.6), squeeze=False, sharex="col")
    for col, (key, (title, xlabel)) in enumerate(UNCERTAINTY_SCORES.items()):
        v = np.asarray(scores[key], dtype=float)
        bins = np.linspace(np.nanmin(v), np.nanmax(v) + 1e-9, 25)
        for row, cls in enumerate(classes):
            ax, mine = axes[row][col], labels == cls
            ax.hist(v[mine], bins=bins, color="#bbbbbb", label="all candidates")
            ax.hist(v[mine & selected], bins=bins, color="#d95f02", alpha=0.85, label="kept by the selection")
            ax.set_title(f"{cls}: {title}", fontsize=9)
            ax.set_ylabel("synthetic patients")
        axes[-1][col].set_xlabel(xlabel)  # the rows of a column share their x axis
    axes[0][0].legend(fontsize=8)
    return fig


def plot_uncertainty(scores: dict[str, np.ndarray], labels: np.ndarray, selected: np.ndarray, path: str) -> None:
    """Write :func:`uncertainty_figure` to ``path`` (PNG, and SVG beside it)."""
    save_figure(uncertainty_figure(scores, labels, selected), path)


def patients_by_class(predictions: pd.DataFrame, n: int) -> list[str]:
    """Up to ``n`` test patients, taken in turn from every class (in id order within a class).

    Parameters
    ----------
    predictions
        ``patient, label`` of the test patients.
    n
        How many to show.

    Returns
    -------
    list of str
        Patients of every class when ``n`` is at least the number of classes, grouped by class.
    """
    by_class = {c: sorted(g["patient"].astype(str)) for c, g in predictions.groupby("label", sort=True)}
    chosen: dict[str, list[str]] = {c: [] for c in by_class}
    for i in range(max((len(v) for v in by_class.values()), default=0)):
        for c, patients in by_class.items():
            if i < len(patients) and sum(map(len, chosen.values())) < n:
                chosen[c].append(patients[i])
    return [p for c in by_class for p in chosen[c]]


def plot_attention(attention: pd.DataFrame, predictions: pd.DataFrame, path: str, *, top: int = 5, n: int = 12) -> None:
    """Per test patient (of every class): sorted attention over its instances and the ids of the top instances."""
    patients = patients_by_class(predictions, n)
    ncol = 4
    nrow = int(np.ceil(len(patients) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 2.7 * nrow), squeeze=False)
    for ax, p in zip(axes.flat, patients, strict=False):
        a = attention[attention["patient"] == p].sort_values("attention", ascending=False)
        ax.plot(np.arange(len(a)), a["attention"].to_numpy(), lw=1)
        row = predictions[predictions["patient"] == p].iloc[0]
        ax.set_title(f"{p}: true {row['label']}, predicted {row['predicted']}", fontsize=8)
        text = "\n".join(f"{i}: {v:.3f}" for i, v in zip(a["instance_id"][:top], a["attention"][:top], strict=True))
        ax.text(0.98, 0.95, text, transform=ax.transAxes, ha="right", va="top", fontsize=6, family="monospace")
        ax.set(xlabel="instance (by attention)", ylabel="attention")
    for ax in list(axes.flat)[len(patients) :]:
        ax.axis("off")
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
    """Show the top-attention crops of test patients of every class as thumbnails (image datasets).

    Parameters
    ----------
    attention
        ``patient, instance_id, attention`` (instance ids are crop file names).
    predictions
        ``patient, label, predicted``.
    folders
        Patient -> folder of its crops.
    path
        PNG destination (an SVG copy is written beside it).
    top
        Crops shown per patient.
    max_patients
        Patients shown, taken in turn from every class (:func:`patients_by_class`).
    """
    from PIL import Image  # noqa: PLC0415 - only image datasets need it

    patients = patients_by_class(predictions, max_patients)
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
                ax.set_title(f"attention {item['attention']:.3f}", fontsize=6)
        row[0].text(
            -0.15,
            0.5,
            f"{p}\ntrue {pred['label']}\npredicted {pred['predicted']}",
            transform=row[0].transAxes,
            ha="right",
            va="center",
            fontsize=7,
        )
    save_figure(fig, path)
