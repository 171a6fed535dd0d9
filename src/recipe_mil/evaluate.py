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
    df = df[SUMMARY_COLUMNS + EXTRA_COLUMNS]
    order = ["dataset", "scenario", "n_per_class", "missing_class", "method", "repeat", "fold", "draw", "seed"]
    return df.sort_values(order).reset_index(drop=True)


def collect_recall(paths: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """Per-class recall of every run (long form: one row per run and class present in its test set)."""
    rows = []
    for p in paths:
        m = json.loads(Path(p).read_text())
        run = {k: m.get(k) for k in ("dataset", "scenario", "method", "repeat", "fold", "seed", *EXTRA_COLUMNS)}
        rows += [{**run, "class": c, "recall": r} for c, r in (m.get("recall") or {}).items()]
    return pd.DataFrame(rows)


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
        difference the variance is 0 and ``p`` is NaN: there is no estimate of the noise.
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
    se = float(np.sqrt((1 / len(d) + test_train_ratio) * d.var(ddof=1)))
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    if se > 0:
        p = float(2 * stats.t.sf(abs(d.mean()) / se, df))
    else:  # every split gave the same difference: no estimate of the noise, so no test (unless it is 0)
        p = 1.0 if d.mean() == 0 else float("nan")
    return {"mean": float(d.mean()), "se": se, "ci_low": d.mean() - half, "ci_high": d.mean() + half, "p": p, "df": df}


def minimal_detectable_difference(se: float, df: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference the test would detect with ``power`` at level ``alpha`` (two-sided).

    ``(t_{1-alpha/2} + t_{power}) * se`` for the observed corrected standard error: what this
    design, with this noise, can tell from zero.
    """
    if not np.isfinite(se) or not np.isfinite(df) or df < 1:
        return float("nan")
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
        nonzero = g["diff"].to_numpy()[np.abs(g["diff"].to_numpy()) > 1e-12]
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


def _p(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3g}"


def headline_table(summary: pd.DataFrame, comparisons: pd.DataFrame, *, metric: str = "balanced_accuracy") -> list[str]:
    """Return the wide table: per dataset and scenario, real_only's mean and each method's difference and interval."""
    from recipe_mil.methods import METHODS, REFERENCE  # noqa: PLC0415 - light, local to the table

    s = _key_strings(summary, GROUP)
    s["label"] = scenario_label(s)
    methods = [m for m in METHODS if m in set(s["method"])]
    others = [m for m in methods if m != REFERENCE]
    lines = [
        "| dataset | scenario | runs | " + " | ".join(methods) + " |",
        "|" + "---|" * (3 + len(methods)),
    ]
    comp = _key_strings(comparisons, GROUP) if len(comparisons) else comparisons
    for (ds, label), g in s.groupby(["dataset", "label"], sort=True):
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
            star = "*" if np.isfinite(r["p_holm"]) and r["p_holm"] < 0.05 else ""
            cells.append(f"{r['mean_diff']:+.3f}{ci}{star}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_markdown(
    summary: pd.DataFrame, realism: pd.DataFrame | None = None, recall: pd.DataFrame | None = None
) -> str:
    """Write the study's summary as Markdown: headline differences, means, paired statistics, recall and realism."""
    comparisons = paired_comparisons(summary)
    s = _key_strings(summary, GROUP)
    s["label"] = scenario_label(s)
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
    for (ds, label, method), g in s.groupby(["dataset", "label", "method"], sort=True):
        cells = [ds, label, method, str(len(g)), f"{g['n_real_train'].mean():.0f}", f"{g['n_synthetic'].mean():.0f}"]
        cells += [_fmt(g[m]) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    if len(comparisons):
        c = _key_strings(comparisons, GROUP)
        c["label"] = scenario_label(c)
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
        r = _key_strings(recall, GROUP)
        r["label"] = scenario_label(r)
        table = r.groupby(["dataset", "label", "method", "class"])["recall"].mean().unstack("class")
        classes = list(table.columns)
        lines += [
            "",
            "## Recall per class (mean over runs)",
            "",
            "| dataset | scenario | method | " + " | ".join(classes) + " |",
            "|" + "---|" * (3 + len(classes)),
        ]
        for (ds, label, method), row in table.iterrows():
            vals = " | ".join("" if pd.isna(row[c]) else f"{row[c]:.2f}" for c in classes)
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
        agg = realism.groupby(["dataset", "scenario", "method", "class"])[cols].mean().reset_index()
        lines += [
            "",
            "## Realism of synthetic patients (mean over folds)",
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
            lines.append(f"| {rec['dataset']} | {rec['scenario']} | {rec['method']} | {rec['class']} | {vals} |")
    return "\n".join(lines) + "\n"
