"""A study run in parts, and one summary from the tables of every part.

A study too long for one sitting is split into named parts (``parts`` in the config: datasets and scenario families
each); ``part: <name>`` runs one of them and writes its summary to ``results/parts/<name>/``. The parts of a study
share nothing a run depends on (every run's seed derives from the config's seed and the run's identity, never from
which runs are planned beside it), so a run gives the same numbers in a part as in the whole study.
:func:`combine_parts` reads the per-run tables of finished parts back and :func:`write_summary` writes the summary
the whole study would have written: the same function the workflow's ``summary`` rule calls.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recipe_mil.scenarios import SCENARIOS, scenario_family

#: the per-run tables a part's summary writes and :func:`combine_parts` reads back
PART_TABLES = ("summary.tsv", "recall.tsv", "realism.tsv")
#: the columns that name one run (a training) in ``summary.tsv`` and ``recall.tsv``
RUN_KEYS = ["dataset", "scenario", "n_per_class", "draw", "missing_class", "method", "repeat", "fold", "seed"]


@dataclass(frozen=True)
class StudyPart:
    """One part of a study: the datasets, scenario families and scenarios it runs.

    Attributes
    ----------
    name
        The part's name in the config's ``parts``.
    datasets
        Datasets it runs (None: every dataset of the config).
    families
        Scenario families it runs, e.g. ``full``, ``low_data`` (None: every configured family).
    scenarios
        Shell-style patterns of the scenario ids it runs, e.g. ``low_data-n16-*`` (None: every one).
    """

    name: str
    datasets: tuple[str, ...] | None = None
    families: tuple[str, ...] | None = None
    scenarios: tuple[str, ...] | None = None

    def includes(self, dataset: str, scenario: str) -> bool:
        """Whether the part runs ``scenario`` (an id such as ``low_data-n2-d0``) of ``dataset``."""
        return (
            (self.datasets is None or dataset in self.datasets)
            and (self.families is None or scenario_family(scenario) in self.families)
            and (self.scenarios is None or any(fnmatch.fnmatchcase(scenario, p) for p in self.scenarios))
        )


def study_part(config: Mapping[str, Any]) -> StudyPart | None:
    """Return the part the config selects with ``part``, or None when it runs the whole study.

    Raises
    ------
    ValueError
        If ``part`` names no entry of ``parts``, or a part names a dataset the config does not have or an unknown
        scenario family.
    """
    name = config.get("part")
    if name is None:
        return None
    parts = config.get("parts") or {}
    if name not in parts:
        raise ValueError(f"part {name!r} is not one of the config's parts ({', '.join(sorted(parts)) or 'none'})")
    spec = parts[name] or {}
    datasets = spec.get("datasets")
    unknown = sorted(set(datasets or ()) - set(config.get("datasets", {})))
    if unknown:
        raise ValueError(f"part {name!r} names datasets the config does not have: {', '.join(unknown)}")
    families = spec.get("families")
    unknown = sorted(set(families or ()) - set(SCENARIOS))
    if unknown:
        raise ValueError(
            f"part {name!r} names unknown scenario families: {', '.join(unknown)} (known: {', '.join(SCENARIOS)})"
        )
    scenarios = spec.get("scenarios")
    return StudyPart(
        name=str(name),
        datasets=None if datasets is None else tuple(datasets),
        families=None if families is None else tuple(families),
        scenarios=None if scenarios is None else tuple(scenarios),
    )


def combine_parts(folders: Sequence[str | os.PathLike[str]]) -> dict[str, pd.DataFrame]:
    """Read the per-run tables of finished parts (or whole studies) into one set of tables.

    Parameters
    ----------
    folders
        Each holds a part's ``summary.tsv``, ``recall.tsv`` and ``realism.tsv`` (``results/parts/<name>/``, or a
        copy of them).

    Returns
    -------
    dict
        ``summary``, ``recall`` and ``realism``: the rows of every folder, in the summary's order.

    Raises
    ------
    ValueError
        If a folder lacks a table, or one run appears in two folders (parts must not overlap).
    """
    from recipe_mil.evaluate import sort_runs  # noqa: PLC0415 - pandas-heavy, only when combining
    from recipe_mil.io.tables import read_tsv  # noqa: PLC0415

    tables: dict[str, list[pd.DataFrame]] = {name: [] for name in PART_TABLES}
    for folder in folders:
        for name in PART_TABLES:
            path = Path(folder) / name
            if not path.is_file():
                raise ValueError(f"{path}: missing; a part's folder holds {', '.join(PART_TABLES)}")
            frame = read_tsv(path)
            if len(frame):
                tables[name].append(frame.assign(_source=str(folder)))
    out = {}
    for name, frames in tables.items():
        out[name.removesuffix(".tsv")] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    summary = out["summary"]
    if len(summary):
        keys = summary[RUN_KEYS].astype(str)
        twice = summary[keys.duplicated(keep=False)]
        if len(twice):
            first = twice.iloc[0]
            raise ValueError(
                f"run {', '.join(f'{k}={first[k]}' for k in RUN_KEYS)} is in more than one part "
                f"({', '.join(sorted(set(twice['_source'])))}): parts must not overlap"
            )
        out["summary"] = sort_runs(summary)
    if len(out["recall"]):
        out["recall"] = sort_runs(out["recall"], then=["class"])
    return {name: frame.drop(columns="_source", errors="ignore") for name, frame in out.items()}


@dataclass(frozen=True)
class SummaryPaths:
    """Where :func:`write_summary` writes (the ``summary`` rule's outputs; PNG figures get an SVG beside them)."""

    tsv: str
    comparisons: str
    recall: str
    realism: str
    md: str
    html: str
    headline: str
    plot: str
    differences: str
    realism_plot: str

    @classmethod
    def in_folder(cls, folder: str | os.PathLike[str]) -> SummaryPaths:
        """Return the layout of the workflow's ``results/`` in ``folder`` (``plots/`` for the figures)."""
        d = Path(folder)
        return cls(
            tsv=str(d / "summary.tsv"),
            comparisons=str(d / "comparisons.tsv"),
            recall=str(d / "recall.tsv"),
            realism=str(d / "realism.tsv"),
            md=str(d / "summary.md"),
            html=str(d / "summary.html"),
            headline=str(d / "headline.html"),
            plot=str(d / "plots" / "metrics.png"),
            differences=str(d / "plots" / "differences.png"),
            realism_plot=str(d / "plots" / "realism.png"),
        )


def write_summary(summary: pd.DataFrame, realism: pd.DataFrame, recall: pd.DataFrame, out: SummaryPaths) -> int:
    """Write the study's summary: per-run tables, paired comparisons, Markdown, HTML and figures.

    Parameters
    ----------
    summary
        One row per run (:func:`recipe_mil.evaluate.collect_metrics`).
    realism
        Realism per run and class, with scenario columns (empty: no augmented method).
    recall
        Per-class recall per run (:func:`recipe_mil.evaluate.collect_recall`).
    out
        The files to write.

    Returns
    -------
    int
        The number of paired comparisons.
    """
    from recipe_mil.evaluate import (  # noqa: PLC0415 - plotting and statistics only when summarising
        in_method_order,
        integer_counts,
        paired_comparisons,
        summary_markdown,
    )
    from recipe_mil.io.atomic import write_text_atomic  # noqa: PLC0415
    from recipe_mil.io.tables import write_tsv  # noqa: PLC0415
    from recipe_mil.plots import plot_differences, plot_metrics, plot_realism  # noqa: PLC0415
    from recipe_mil.summary_html import headline_fragment, summary_page  # noqa: PLC0415

    comparisons = paired_comparisons(summary)
    if len(comparisons):
        comparisons = in_method_order(comparisons, by=["dataset", "scenario", "n_per_class", "missing_class"])
    for path, frame in (
        (out.tsv, summary),
        (out.realism, realism),
        (out.recall, recall),
        (out.comparisons, comparisons),
    ):
        write_tsv(integer_counts(frame), path)
    markdown = summary_markdown(summary, realism, recall) + power_markdown(summary)
    write_text_atomic(out.md, markdown)
    write_text_atomic(out.html, summary_page(markdown))
    write_text_atomic(out.headline, headline_fragment(markdown))
    plot_metrics(summary, out.plot, recall=recall)
    plot_differences(comparisons, out.differences)
    plot_realism(realism, out.realism_plot)
    return len(comparisons)


#: designs :func:`power_projection` projects to: (label, splits J or None for the observed, seeds S or None)
DESIGNS: tuple[tuple[str, int | None, int | None], ...] = (
    ("this design", None, None),
    ("10 seeds per split", None, 10),
    ("5x10 splits", 50, None),
    ("5x10 splits, 10 seeds", 50, 10),
)


def variance_components(
    summary: pd.DataFrame, *, reference: str = "real_only", metric: str = "balanced_accuracy"
) -> pd.DataFrame:
    """Split the noise of every paired comparison into its train/test-split and training-seed parts.

    The difference of a method from ``reference`` in split ``j`` and seed ``k`` is ``d_jk``; the comparisons
    average it over the ``S`` seeds of a split, so ``var(mean_k d_jk) = s_split^2 + s_seed^2 / S``. ``s_seed^2`` is
    the mean over splits of the variance across seeds, ``s_split^2`` the rest (at least 0). Seeds only reduce the
    second part; splits are the units the corrected t-test is about.

    Returns
    -------
    pandas.DataFrame
        Per dataset, scenario group and method: ``n_splits`` (J), ``n_seeds`` (S), ``ratio`` (n_test / n_train of
        a split, ``1 / (K - 1)``), ``mean_diff``, ``sd_split`` and ``sd_seed``.
    """
    from recipe_mil.evaluate import GROUP, RESAMPLE, resample_differences  # noqa: PLC0415

    per_seed = [
        resample_differences(runs, reference=reference, metric=metric).assign(seed=seed)
        for seed, runs in summary.groupby("seed", sort=True)
    ]
    if not per_seed or all(d.empty for d in per_seed):
        return pd.DataFrame()
    diffs = pd.concat(per_seed, ignore_index=True)
    n_folds = summary.groupby("dataset")["fold"].max().astype(int) + 1
    rows = []
    for (*key, method), g in diffs.groupby([*GROUP, "method"], sort=True, dropna=False):
        table = g.pivot_table(index=RESAMPLE, columns="seed", values="diff")
        if table.isna().any().any():
            table = table.dropna()  # a split must have every seed to separate the two parts
        n_splits, n_seeds = table.shape
        within = float(table.var(axis=1, ddof=1).mean()) if n_seeds > 1 else float("nan")
        between = float(table.mean(axis=1).var(ddof=1)) if n_splits > 1 else float("nan")
        seed_part = within / n_seeds if np.isfinite(within) else 0.0
        k = int(n_folds.get(key[0], 2))
        rows.append(
            {
                **dict(zip(GROUP, key, strict=True)),
                "method": method,
                "n_splits": n_splits,
                "n_seeds": n_seeds,
                "ratio": 1 / max(k - 1, 1),
                "mean_diff": float(table.to_numpy().mean()) if table.size else float("nan"),
                "sd_split": float(np.sqrt(max(between - seed_part, 0.0))) if np.isfinite(between) else float("nan"),
                "sd_seed": float(np.sqrt(within)) if np.isfinite(within) else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def projected_mdd(components: pd.DataFrame, n_splits: int | None = None, n_seeds: int | None = None) -> pd.Series:
    """Minimal detectable difference (80% power, two-sided 0.05) of each comparison under another design.

    ``se^2 = (1 / J + n_test / n_train) * (s_split^2 + s_seed^2 / S)`` with the observed noise parts of
    :func:`variance_components`; J splits (None: as observed) and S seeds per split (None: as observed). At the
    observed design this is the ``mdd`` of :func:`recipe_mil.evaluate.paired_comparisons`, unless the seeds alone
    vary more than the splits (then ``s_split`` is 0 and the projection is the smaller).
    """
    from recipe_mil.evaluate import minimal_detectable_difference  # noqa: PLC0415

    j = components["n_splits"] if n_splits is None else pd.Series(n_splits, index=components.index)
    s = components["n_seeds"] if n_seeds is None else pd.Series(n_seeds, index=components.index)
    seed_var = components["sd_seed"].fillna(0.0) ** 2 / s
    se = np.sqrt((1 / j + components["ratio"]) * (components["sd_split"] ** 2 + seed_var))
    return pd.Series(
        [minimal_detectable_difference(float(e), float(n) - 1) for e, n in zip(se, j, strict=True)],
        index=components.index,
    )


def power_projection(summary: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and scenario group: the median over methods of the noise parts and of the projected MDDs.

    Columns: the group's, ``n_splits``, ``n_seeds``, ``sd_split``, ``sd_seed``, one ``mdd: <design>`` column per
    entry of :data:`DESIGNS` and ``mdd floor`` (infinitely many splits and seeds: ``2.80 * sd_split / sqrt(K - 1)``,
    what only more test patients per split or less noise per patient can lower). Trainings, and so cost, grow as
    J x S.
    """
    from recipe_mil.evaluate import GROUP  # noqa: PLC0415

    comp = variance_components(summary)
    if comp.empty:
        return comp
    for label, j, s in DESIGNS:
        comp[f"mdd: {label}"] = projected_mdd(comp, j, s).to_numpy()
    comp["mdd floor"] = 2.8016 * comp["sd_split"] * np.sqrt(comp["ratio"])  # z_0.975 + z_0.8
    cols = ["sd_split", "sd_seed", *(f"mdd: {d[0]}" for d in DESIGNS), "mdd floor"]
    return (
        comp.groupby(GROUP, sort=True, dropna=False)
        .agg(n_splits=("n_splits", "max"), n_seeds=("n_seeds", "max"), **{c: (c, "median") for c in cols})
        .reset_index()
    )


def power_markdown(summary: pd.DataFrame) -> str:
    """Return the summary's power section: what this design can detect and what more splits or seeds would."""
    from recipe_mil.evaluate import scenario_label  # noqa: PLC0415

    table = power_projection(summary)
    if table.empty or not np.isfinite(table["mdd: this design"]).any():
        return ""
    lines = [
        "",
        "## Power: the smallest difference the study can detect",
        "",
        "Minimal detectable difference in balanced accuracy (80% power, two-sided 0.05, corrected resampled t) per "
        "dataset and scenario, the median over the methods compared with real_only. The noise of a paired "
        "difference has two parts: the train/test split (`sd split`) and the training seed (`sd seed`); seeds "
        "average out the second only, and the corrected variance factor 1/J + 1/(K-1) keeps a floor however many "
        "splits J are run. Projections keep the observed noise; trainings (and cost) grow as splits x seeds.",
        "",
        "| dataset | scenario | J | S | sd split | sd seed | "
        + " | ".join(label for label, _, _ in DESIGNS)
        + " | floor |",
        "|---|---|---|---|---|---|" + "---|" * (len(DESIGNS) + 1),
    ]
    table = table.assign(label=scenario_label(table))
    for _, r in table.iterrows():
        cells = [str(r["dataset"]), str(r["label"]), str(int(r["n_splits"])), str(int(r["n_seeds"]))]
        cells += [_num(r["sd_split"]), _num(r["sd_seed"])]
        cells += [_num(r[f"mdd: {label}"]) for label, _, _ in DESIGNS] + [_num(r["mdd floor"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    return f"{value:.3f}" if np.isfinite(value) else "n/a"
