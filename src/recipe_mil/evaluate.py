"""Metrics per run and summary tables across runs (docs/method.md §6, §7)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

SUMMARY_COLUMNS = [
    "dataset",
    "scenario",
    "method",
    "repeat",
    "fold",
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
    order = ["dataset", "scenario", "n_per_class", "missing_class", "method", "repeat", "fold", "draw"]
    return df.sort_values(order).reset_index(drop=True)


def paired_tests(
    summary: pd.DataFrame, *, reference: str = "real_only", metric: str = "balanced_accuracy"
) -> pd.DataFrame:
    """Paired comparison of every method with ``reference`` across folds (Wilcoxon signed-rank).

    Runs are paired by dataset, scenario, n per class, missing class, repeat, fold and draw.

    Returns
    -------
    pandas.DataFrame
        One row per dataset / scenario / n / method: number of pairs, mean difference
        (method minus reference) and the two-sided Wilcoxon p-value (NaN when every
        difference is zero or there are fewer than two pairs).
    """
    s = summary.copy()
    keys = ["dataset", "scenario", "n_per_class", "missing_class"]
    pair = [*keys, "repeat", "fold", "draw"]
    s[pair] = s[pair].astype(str)
    ref = s[s["method"] == reference].set_index(pair)[metric]
    rows = []
    for (method, *key), g in s[s["method"] != reference].groupby(["method", *keys], sort=True):
        joined = g.set_index(pair)[metric].to_frame("m").join(ref.rename("r"), how="inner")
        diff = (joined["m"] - joined["r"]).to_numpy()
        p = float("nan")
        if len(diff) >= 2 and np.any(diff != 0):
            p = float(wilcoxon(diff).pvalue)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "method": method,
                "n_pairs": len(diff),
                "mean_diff": float(diff.mean()) if len(diff) else float("nan"),
                "wilcoxon_p": p,
            }
        )
    return pd.DataFrame(rows)


def _fmt(values: pd.Series) -> str:
    v = values.dropna()
    if v.empty:
        return "n/a"
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.3f} ± {sd:.3f}"


def summary_markdown(summary: pd.DataFrame, realism: pd.DataFrame | None = None) -> str:
    """Mean ± sd per dataset / scenario (/ n per class, missing class) / method, tests and realism, as Markdown."""
    s = summary.copy()
    s["n_per_class"] = s["n_per_class"].apply(lambda x: "" if pd.isna(x) else str(int(x)))
    s["missing_class"] = s["missing_class"].fillna("").astype(str)
    s["scenario"] = s["scenario"] + s["missing_class"].map(lambda c: f" ({c})" if c else "")
    keys = ["dataset", "scenario", "n_per_class", "method"]
    lines = [
        "# recipe-mil summary",
        "",
        "Mean ± sd over repeats, folds (and low-data draws) of metrics on real held-out test patients.",
        "",
        "| dataset | scenario | n/class | method | runs | n real train | n synthetic | "
        + " | ".join(m.replace("_", " ") for m in METRICS)
        + " |",
        "|" + "---|" * (7 + len(METRICS)),
    ]
    for key, g in s.groupby(keys, sort=True):
        cells = [*map(str, key), str(len(g)), f"{g['n_real_train'].mean():.1f}", f"{g['n_synthetic'].mean():.1f}"]
        cells += [_fmt(g[m]) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    tests = paired_tests(summary)
    if len(tests):
        lines += [
            "",
            "## Paired test against real_only (balanced accuracy)",
            "",
            "Wilcoxon signed-rank across folds (and draws); with few folds the smallest possible p-value is large "
            "(3 pairs: 0.25), so read the mean difference first.",
            "",
            "| dataset | scenario | n/class | missing | method | pairs | mean diff | p |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in tests.itertuples():
            n = "" if r.n_per_class in ("nan", "None") else str(int(float(r.n_per_class)))
            miss = "" if r.missing_class in ("nan", "None") else r.missing_class
            lines.append(
                f"| {r.dataset} | {r.scenario} | {n} | {miss} | {r.method} | {r.n_pairs} | "
                f"{r.mean_diff:+.3f} | {r.wilcoxon_p:.3g} |"
            )
    if realism is not None and len(realism):
        cols = ["mmd_bag", "mmd_bag_ref", "c2st", "c2st_ref", "mmd_instance", "mmd_instance_ref"]
        agg = realism.groupby(["dataset", "scenario", "method", "class"])[cols].mean().reset_index()
        lines += [
            "",
            "## Realism of synthetic patients (mean over folds)",
            "",
            "Synthetic vs real held-out (test) bags of the same class; `_ref` = real training (or, for a missing "
            "class, external) bags vs the same held-out bags. MMD² on bag means and on instances; C2ST = balanced "
            "accuracy of a classifier telling the two sets of bag means apart (0.5: indistinguishable).",
            "",
            "| dataset | scenario | method | class | " + " | ".join(cols) + " |",
            "|" + "---|" * (4 + len(cols)),
        ]
        for r in agg.to_dict("records"):
            vals = " | ".join(f"{r[c]:.3f}" for c in cols)
            lines.append(f"| {r['dataset']} | {r['scenario']} | {r['method']} | {r['class']} | {vals} |")
    return "\n".join(lines) + "\n"
