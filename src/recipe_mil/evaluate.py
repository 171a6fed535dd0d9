"""Metrics per run and summary tables across runs (DESIGN §3)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
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
EXTRA_COLUMNS = ["n_per_class", "draw"]
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
    return df.sort_values(["dataset", "scenario", "n_per_class", "method", "repeat", "fold", "draw"]).reset_index(
        drop=True
    )


def _fmt(values: pd.Series) -> str:
    v = values.dropna()
    if v.empty:
        return "n/a"
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.3f} ± {sd:.3f}"


def summary_markdown(summary: pd.DataFrame) -> str:
    """Mean ± sd of each metric per dataset / scenario (/ n per class) / method, as Markdown."""
    s = summary.copy()
    s["n_per_class"] = s["n_per_class"].apply(lambda x: "" if pd.isna(x) else str(int(x)))
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
    return "\n".join(lines) + "\n"
