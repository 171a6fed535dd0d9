"""Metrics per run and summary tables across runs, with paired statistics (docs/method.md §6, §7)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

SUMMARY_COLUMNS = [
    "dataset",
    "scenario",
    "method",
    "repeat",
    "fold",
    "seed",
    "n_real_train",
    "n_synthetic",
    "balanced_accuracy",
    "accuracy",
    "macro_f1",
    "auroc",
]
EXTRA_COLUMNS = ["n_per_class", "draw", "missing_class"]
METRICS = ["balanced_accuracy", "accuracy", "macro_f1", "auroc"]
#: columns that hold counts or indices: written as integers (an empty field where missing), never as ``2.0``
COUNT_COLUMNS = [
    "repeat",
    "fold",
    "seed",
    "draw",
    "n_per_class",
    "n_real_train",
    "n_synthetic",
    "n_heldout",
    "n_runs",
    "n_resamples",
    "n_nonzero",
]


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, n_classes: int) -> dict[str, float]:
    """Balanced accuracy, accuracy, macro F1 and macro one-vs-rest AUROC.

    Parameters
    ----------
    y_true
        True class indices, shape (n,).
    probs
        Predicted class probabilities, shape (n, n_classes).
    n_classes
        Number of classes in the model.

    Returns
    -------
    dict
        The four metrics; AUROC is NaN when fewer than two classes are present.
    """
    y_pred = probs.argmax(axis=1)
    present = np.unique(y_true)
    out = {
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=present, zero_division=0)),
    }
    if len(present) < 2:
        out["auroc"] = float("nan")
    elif n_classes == 2:
        out["auroc"] = float(roc_auc_score(y_true, probs[:, 1]))
    else:
        aucs = [roc_auc_score(y_true == c, probs[:, c]) for c in present]
        out["auroc"] = float(np.mean(aucs))
    return out


def collect_metrics(paths: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """Read ``metrics.json`` files into the summary table (contract columns first)."""
    rows = [json.loads(Path(p).read_text()) for p in paths]
    df = pd.DataFrame(rows)
    for col in SUMMARY_COLUMNS + EXTRA_COLUMNS:
        if col not in df:
            df[col] = np.nan
    return sort_runs(df[SUMMARY_COLUMNS + EXTRA_COLUMNS])


#: the order of the summary's rows
RUN_ORDER = ["dataset", "scenario", "n_per_class", "missing_class", "method", "repeat", "fold", "draw", "seed"]


def sort_runs(frame: pd.DataFrame, *, then: Sequence[str] = ()) -> pd.DataFrame:
    """Return a per-run table in the summary's row order (:data:`RUN_ORDER`, then the columns ``then``)."""
    return frame.sort_values([*RUN_ORDER, *then], kind="stable").reset_index(drop=True)


def integer_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with its :data:`COUNT_COLUMNS` as nullable integers, so tables say ``2``, not ``2.0``.

    Raises
    ------
    ValueError
        If a count column holds a value that is not a whole number (a bug upstream, not a format question).
    """
    out = frame.copy()
    for col in COUNT_COLUMNS:
        if col not in out:
            continue
        values = pd.to_numeric(out[col], errors="raise")
        whole = values.dropna()
        if not (whole == whole.round()).all():
            raise ValueError(
                f"column {col!r} should hold whole numbers, got {sorted(set(whole[whole != whole.round()]))}"
            )
        out[col] = values.round().astype("Int64")
    return out


def scenario_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Split scenario ids (``low_data-n2-d0``, ``missing_class-healthy``) into the columns of ``summary.tsv``.

    Per-run tables written inside a scenario's folder (``realism.tsv``) carry the scenario id; the summary carries
    the family in ``scenario`` plus ``n_per_class``, ``draw`` and ``missing_class``. This gives a table with ids the
    summary's columns, so the two join on ``dataset, scenario, n_per_class, draw, missing_class, repeat, fold``.
    """
    from recipe_mil.splits import parse_scenario  # noqa: PLC0415 - only the summary needs it

    if frame.empty or "scenario" not in frame or "n_per_class" in frame:  # empty, or split already
        return frame
    parsed = [parse_scenario(str(s)) for s in frame["scenario"]]
    out = frame.assign(
        scenario=[p.name for p in parsed],
        n_per_class=[np.nan if p.n_per_class is None else p.n_per_class for p in parsed],
        draw=[np.nan if p.draw is None else p.draw for p in parsed],
        missing_class=["" if p.missing is None else p.missing for p in parsed],
    )
    keys = [c for c in ("dataset", "scenario", *EXTRA_COLUMNS, "method", "repeat", "fold") if c in out]
    return out[keys + [c for c in out.columns if c not in keys]]


def in_method_order(frame: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Sort rows by ``by`` and then by method in the registry's order (:data:`recipe_mil.methods.METHODS`)."""
    from recipe_mil.methods import METHODS  # noqa: PLC0415 - dependency-free, local to the tables

    rank = {m: i for i, m in enumerate(METHODS)}
    key = frame["method"].map(lambda m: rank.get(m, len(rank)))
    return frame.assign(_rank=key).sort_values([*by, "_rank", "method"], kind="stable").drop(columns="_rank")


def collect_recall(paths: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """Per-class recall of every run (long form: one row per run and class present in its test set)."""
    rows = []
    for p in paths:
        m = json.loads(Path(p).read_text())
        run = {k: m.get(k) for k in ("dataset", "scenario", "method", "repeat", "fold", "seed", *EXTRA_COLUMNS)}
        rows += [{**run, "class": c, "recall": r} for c, r in (m.get("recall") or {}).items()]
    return sort_runs(pd.DataFrame(rows), then=["class"]) if rows else pd.DataFrame(rows)


#: the runs of one comparison (a dataset / scenario / low-data size / missing class)
GROUP = ["dataset", "scenario", "n_per_class", "missing_class"]
#: a resample: one train/test split; low-data draws and training seeds of a split are averaged
RESAMPLE = ["repeat", "fold"]


def _key_strings(frame: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    out = frame.copy()
    for c in cols:
        out[c] = out[c].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    return out


def resample_differences(
    summary: pd.DataFrame, *, reference: str = "real_only", metric: str = "balanced_accuracy"
) -> pd.DataFrame:
    """Paired differences (method minus ``reference``) per resample.

    Runs are paired on dataset, scenario, low-data size and draw, missing class, repeat, fold
    and training seed (every method of a fold and seed trained from the same seed), then the
    differences are averaged over draws and seeds within each train/test split: the splits
    are the units the interval is about, the seeds only reduce the noise of each.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`GROUP`, ``method``, :data:`RESAMPLE`, ``diff`` and ``n_runs`` (paired
        runs averaged into the resample).
    """
    s = _key_strings(summary, [*GROUP, "draw", "seed", *RESAMPLE])
    pair = [*GROUP, *RESAMPLE, "draw", "seed"]
    ref = s[s["method"] == reference].set_index(pair)[metric].rename("ref")
    other = s[s["method"] != reference].set_index([*pair, "method"])[metric].rename("value").reset_index()
    joined = other.join(ref, on=pair, how="inner")
    joined["diff"] = joined["value"] - joined["ref"]
    out = joined.groupby([*GROUP, "method", *RESAMPLE], sort=True)["diff"].agg(["mean", "size"]).reset_index()
    return out.rename(columns={"mean": "diff", "size": "n_runs"})


SAME_DIFFERENCE = 1e-9
"""Differences (of balanced accuracies, averaged over seeds) closer than this are equal; smaller ones are 0."""


def corrected_resampled_t(diffs: np.ndarray, test_train_ratio: float, *, alpha: float = 0.05) -> dict[str, float]:
    """Mean paired difference with the corrected resampled t interval (Nadeau and Bengio 2003).

    Cross-validation splits share training patients, so their differences are correlated and
    the plain t interval is too narrow. The corrected variance of the mean of J resampled
    differences is ``(1 / J + n_test / n_train) * s^2`` (Bouckaert and Frank 2004 for
    repeated K-fold: ``n_test / n_train = 1 / (K - 1)``), with J - 1 degrees of freedom.

    Parameters
    ----------
    diffs
        One difference per resample.
    test_train_ratio
        ``n_test / n_train`` of a split.
    alpha
        One minus the interval's coverage.

    Returns
    -------
    dict
        ``mean``, ``se`` (corrected), ``ci_low``, ``ci_high``, ``p`` (two-sided) and ``df``;
        NaN where fewer than two resamples exist. When every resample gives the same non-zero
        difference (within ``SAME_DIFFERENCE``) ``se`` is 0, the interval and ``p`` are NaN: there is no
        estimate of the noise.
    """
    d = np.asarray(diffs, dtype=float)
    nan = float("nan")
    if len(d) < 2:
        return {
            "mean": float(d.mean()) if len(d) else nan,
            "se": nan,
            "ci_low": nan,
            "ci_high": nan,
            "p": nan,
            "df": nan,
        }
    df = len(d) - 1
    mean = float(d.mean())
    if float(d.max() - d.min()) <= SAME_DIFFERENCE:
        # every split gave the same difference (up to rounding: averages over seeds of equal differences can
        # differ in the last bits): no estimate of the noise, so no interval and no test (unless it is 0)
        p = 1.0 if abs(mean) <= SAME_DIFFERENCE else nan
        return {"mean": mean, "se": 0.0, "ci_low": nan, "ci_high": nan, "p": p, "df": df}
    se = float(np.sqrt((1 / len(d) + test_train_ratio) * d.var(ddof=1)))
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, df))
    return {"mean": mean, "se": se, "ci_low": mean - half, "ci_high": mean + half, "p": p, "df": df}


def minimal_detectable_difference(se: float, df: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference the test would detect with ``power`` at level ``alpha`` (two-sided).

    ``(t_{1-alpha/2} + t_{power}) * se`` for the observed corrected standard error: what this
    design, with this noise, can tell from zero.
    """
    if not np.isfinite(se) or se <= 0 or not np.isfinite(df) or df < 1:
        return float("nan")  # no noise estimate (too few splits, or every split the same): nothing to say
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of p-values (NaN entries stay NaN and do not count)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        out[i] = running
    return out


def paired_comparisons(
    summary: pd.DataFrame, *, reference: str = "real_only", metric: str = "balanced_accuracy", alpha: float = 0.05
) -> pd.DataFrame:
    """Every method against ``reference``, per dataset / scenario: interval, tests, Holm and power.

    Returns
    -------
    pandas.DataFrame
        One row per group and method: ``n_runs`` (paired runs), ``n_resamples`` (splits J),
        ``mean_diff`` with its 95% ``ci_low``/``ci_high`` and ``p`` (corrected resampled t),
        ``p_holm`` (Holm across the methods of the group), ``n_nonzero`` and ``wilcoxon_p``
        (signed-rank test of the per-split differences, zeros dropped; NaN below two non-zero
        differences) and ``mdd`` (minimal detectable difference at 80% power).
    """
    diffs = resample_differences(summary, reference=reference, metric=metric)
    if diffs.empty:
        return pd.DataFrame()
    n_folds = summary.groupby("dataset")["fold"].max().astype(int) + 1
    rows = []
    for (*key, method), g in diffs.groupby([*GROUP, "method"], sort=True):
        k = int(n_folds.get(key[0], 2))
        t = corrected_resampled_t(g["diff"].to_numpy(), 1 / max(k - 1, 1), alpha=alpha)
        nonzero = g["diff"].to_numpy()[np.abs(g["diff"].to_numpy()) > SAME_DIFFERENCE]
        w = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) >= 2 else float("nan")
        rows.append(
            {
                **dict(zip(GROUP, key, strict=True)),
                "method": method,
                "n_runs": int(g["n_runs"].sum()),
                "n_resamples": len(g),
                "mean_diff": t["mean"],
                "ci_low": t["ci_low"],
                "ci_high": t["ci_high"],
                "p": t["p"],
                "n_nonzero": len(nonzero),
                "wilcoxon_p": w,
                "mdd": minimal_detectable_difference(t["se"], t["df"], alpha=alpha),
            }
        )
    out = pd.DataFrame(rows)
    out["p_holm"] = np.nan
    for _, idx in out.groupby(GROUP, sort=False).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p"].to_numpy())
    return out


def _fmt(values: pd.Series) -> str:
    v = values.dropna()
    if v.empty:
        return "n/a"
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.3f} ± {sd:.3f}"


def scenario_label(frame: pd.DataFrame) -> pd.Series:
    """One readable scenario name per row: ``full``, ``low_data (n=2)``, ``missing_class (healthy)``."""
    n = frame["n_per_class"].map(lambda x: "" if x in ("", None) or pd.isna(x) else f"n={int(float(x))}")
    miss = frame["missing_class"].map(lambda x: "" if x in ("", None) or pd.isna(x) else str(x))
    detail = n.where(n != "", miss)
    return frame["scenario"].astype(str) + detail.map(lambda d: f" ({d})" if d else "")


def with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with its key columns as strings and a readable ``label`` (:func:`scenario_label`).

    Rows come in reading order: dataset, scenario family (full, low data, missing class), n per class, missing
    class, then methods in the registry's order. The tables and the figures of the summary use it.
    """
    from recipe_mil.scenarios import SCENARIOS  # noqa: PLC0415 - light, local to the tables

    out = _key_strings(frame, GROUP)
    out["label"] = scenario_label(out)
    family = {f: i for i, f in enumerate(SCENARIOS)}
    out["_family"] = out["scenario"].map(lambda x: family.get(x, len(family)))
    out["_n"] = pd.to_numeric(out["n_per_class"], errors="coerce")
    return in_method_order(out, by=["dataset", "_family", "_n", "missing_class"]).drop(columns=["_family", "_n"])


def _count(values: pd.Series) -> str:
    """Format a count over runs: the number when every run has it, else its range (``11–12``), never ``11.5``."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "n/a"
    low, high = int(round(v.min())), int(round(v.max()))
    return str(low) if low == high else f"{low}–{high}"


def _p(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3g}"


def headline_table(summary: pd.DataFrame, comparisons: pd.DataFrame, *, metric: str = "balanced_accuracy") -> list[str]:
    """Return the wide table: per dataset and scenario, real_only's mean and each method's difference and interval."""
    from recipe_mil.methods import METHODS, REFERENCE  # noqa: PLC0415 - light, local to the table

    s = with_labels(summary)
    methods = [m for m in METHODS if m in set(s["method"])]
    others = [m for m in methods if m != REFERENCE]
    lines = [
        "| dataset | scenario | runs | " + " | ".join(methods) + " |",
        "|" + "---|" * (3 + len(methods)),
    ]
    comp = _key_strings(comparisons, GROUP) if len(comparisons) else comparisons
    for (ds, label), g in s.groupby(["dataset", "label"], sort=False):
        ref = g.loc[g["method"] == REFERENCE, metric]
        cells = [ds, label, str(int((g["method"] == REFERENCE).sum())), f"{ref.mean():.3f}" if len(ref) else ""]
        key = g.iloc[0]
        for m in others:
            row = comp[(comp["method"] == m) & (comp[GROUP] == key[GROUP]).all(axis=1)] if len(comp) else pd.DataFrame()
            if row.empty:
                cells.append("")
                continue
            r = row.iloc[0]
            ci = f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if np.isfinite(r["ci_low"]) else ""
            if not ci and r.get("n_resamples", 0) >= 2:
                ci = " (same in every split: no interval)"
            star = "*" if np.isfinite(r["p_holm"]) and r["p_holm"] < 0.05 else ""
            cells.append(f"{r['mean_diff']:+.3f}{ci}{star}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_markdown(
    summary: pd.DataFrame, realism: pd.DataFrame | None = None, recall: pd.DataFrame | None = None
) -> str:
    """Write the study's summary as Markdown: headline differences, means, paired statistics, recall and realism."""
    comparisons = paired_comparisons(summary)
    s = with_labels(summary)
    n_seeds = int(summary["seed"].nunique()) if "seed" in summary and summary["seed"].notna().any() else 1
    lines = [
        "# recipe-mil summary",
        "",
        "Balanced accuracy on real held-out test patients. Every method of a fold and training seed trained from the "
        f"same seed ({n_seeds} seed(s) per fold); differences are paired on dataset, scenario, repeat, fold, low-data "
        "draw and seed, then averaged within each train/test split.",
        "",
        "## Difference from real_only",
        "",
        "`real_only`: its mean balanced accuracy. Other methods: mean paired difference (method minus real_only) "
        "with its 95% interval from the corrected resampled t-test (Nadeau & Bengio 2003; variance factor "
        "1/J + 1/(K-1) for J splits of K-fold cross-validation). `*`: Holm-adjusted p < 0.05 across the methods of "
        "the row. An interval that contains 0 means the data do not show a difference.",
        "",
        *headline_table(summary, comparisons),
        "",
        "## Mean ± sd per method",
        "",
        "Over repeats, folds, low-data draws and training seeds.",
        "",
        "| dataset | scenario | method | runs | n real train | n synthetic | "
        + " | ".join(m.replace("_", " ") for m in METRICS)
        + " |",
        "|" + "---|" * (6 + len(METRICS)),
    ]
    for (ds, label, method), g in s.groupby(["dataset", "label", "method"], sort=False):
        cells = [ds, label, method, str(len(g)), _count(g["n_real_train"]), _count(g["n_synthetic"])]
        cells += [_fmt(g[m]) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    if len(comparisons):
        c = with_labels(comparisons)
        lines += [
            "",
            "## Paired comparisons against real_only (balanced accuracy)",
            "",
            "`runs`: paired runs; `splits`: train/test splits J (the t-test's sample size); `p`: corrected resampled "
            "t-test; `p Holm`: adjusted across the methods of the dataset and scenario; `Wilcoxon`: signed-rank test "
            "of the per-split differences with zero differences dropped (`non-zero`: how many remain; with fewer "
            "than 6 splits it cannot reach 0.05); `MDD`: the smallest true difference this design would detect with "
            "80% power at the 5% level, from the observed noise.",
            "",
            "| dataset | scenario | method | runs | splits | mean diff | 95% CI | p | p Holm | non-zero | Wilcoxon "
            "| MDD |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in c.to_dict("records"):
            ci = f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if np.isfinite(r["ci_low"]) else "n/a"
            mdd = f"{r['mdd']:.3f}" if np.isfinite(r["mdd"]) else "n/a"
            lines.append(
                f"| {r['dataset']} | {r['label']} | {r['method']} | {r['n_runs']} | {r['n_resamples']} | "
                f"{r['mean_diff']:+.3f} | {ci} | {_p(r['p'])} | {_p(r['p_holm'])} | {r['n_nonzero']} | "
                f"{_p(r['wilcoxon_p'])} | {mdd} |"
            )
    if recall is not None and len(recall):
        r = with_labels(recall)
        classes = list(dict.fromkeys(r["class"]))  # the order the runs list them
        lines += [
            "",
            "## Recall per class (mean over runs)",
            "",
            "| dataset | scenario | method | " + " | ".join(classes) + " |",
            "|" + "---|" * (3 + len(classes)),
        ]
        for (ds, label, method), g in r.groupby(["dataset", "label", "method"], sort=False):
            per_class = g.groupby("class")["recall"].mean()
            vals = " | ".join(f"{per_class[c]:.2f}" if c in per_class else "" for c in classes)
            lines.append(f"| {ds} | {label} | {method} | {vals} |")
    if realism is not None and len(realism):
        cols = [
            "mmd_bag",
            "mmd_bag_ref",
            "c2st",
            "c2st_p",
            "c2st_ref",
            "c2st_ref_p",
            "mmd_instance",
            "mmd_instance_ref",
        ]
        cols = [c for c in cols if c in realism]
        rz = with_labels(scenario_columns(realism))
        agg = rz.groupby(["dataset", "label", "method", "class"], sort=False)[cols].mean().reset_index()
        lines += [
            "",
            "## Realism of synthetic patients (mean over folds and low-data draws)",
            "",
            "Synthetic vs real held-out (test) bags of the same class; `_ref` = real training (or, for a missing "
            "class, external) bags vs the same held-out bags. MMD² on bag means and on instances, with one kernel "
            "width per held-out set (so the rows of a class can be ranked); C2ST = balanced accuracy of a classifier "
            "telling the two sets of bag means apart (0.5: indistinguishable), `_p` its permutation p-value (mean "
            "over folds; small: the sets differ).",
            "",
            "| dataset | scenario | method | class | " + " | ".join(cols) + " |",
            "|" + "---|" * (4 + len(cols)),
        ]
        for rec in agg.to_dict("records"):
            vals = " | ".join(f"{rec[c]:.3f}" for c in cols)
            lines.append(f"| {rec['dataset']} | {rec['label']} | {rec['method']} | {rec['class']} | {vals} |")
    return "\n".join(lines) + "\n"
