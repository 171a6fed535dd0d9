"""Sample-sheet loading and checks that name the offending row (docs/method.md §9)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from recipe_mil.io.bags import BagFileError, bag_shape

REQUIRED_COLUMNS = ("patient", "label")
COHORTS = ("target", "external")


class SampleSheetError(ValueError):
    """A sample sheet is malformed; the message names the file and rows."""


def _rows(sheet: pd.DataFrame, mask: pd.Series, *, path: bool = False) -> str:
    # Data rows are numbered as a user sees them in an editor: header is line 1.
    def row(i: int) -> str:
        return f"line {i + 2} ({sheet.at[i, 'patient']}{': ' + str(sheet.at[i, 'path']) if path else ''})"

    return ", ".join(row(i) for i in sheet.index[mask])


def load_sheet(path: str | os.PathLike[str], *, modality: str) -> pd.DataFrame:
    """Read a TSV sample sheet and fill defaults.

    Parameters
    ----------
    path
        Tab-separated file with columns ``patient``, ``label``, ``path`` (for ``scrna``
        optional: the patient id in the ``.h5ad``) and optionally ``cohort``.
    modality
        ``scrna``, ``bags``, ``image`` or ``flow``.

    Returns
    -------
    pandas.DataFrame
        With string columns ``patient, label, path, cohort`` and a default index.

    Raises
    ------
    SampleSheetError
        If the file is missing or empty, or a required column is absent.
    """
    p = Path(path)
    if not p.is_file():
        raise SampleSheetError(f"sample sheet {p} does not exist")
    try:
        sheet = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False, comment="#")
    except pd.errors.EmptyDataError:
        raise SampleSheetError(f"sample sheet {p} is empty") from None
    sheet.columns = [c.strip() for c in sheet.columns]
    required = REQUIRED_COLUMNS if modality == "scrna" else (*REQUIRED_COLUMNS, "path")
    missing = [c for c in required if c not in sheet.columns]
    if missing:
        raise SampleSheetError(
            f"sample sheet {p}: missing column(s) {missing}; found {list(sheet.columns)} "
            f"(expected tab-separated columns {list(required)} and optionally 'cohort')"
        )
    if sheet.empty:
        raise SampleSheetError(f"sample sheet {p} has a header but no patients")
    sheet = sheet.apply(lambda col: col.str.strip())
    if "path" not in sheet:
        sheet["path"] = sheet["patient"]
    if "cohort" not in sheet:
        sheet["cohort"] = "target"
    sheet["cohort"] = sheet["cohort"].replace("", "target")
    sheet["path"] = sheet["path"].where(sheet["path"] != "", sheet["patient"])
    return sheet[["patient", "label", "path", "cohort"]].reset_index(drop=True)


def check_sheet(
    sheet: pd.DataFrame,
    *,
    source: str,
    classes: Sequence[str],
    n_folds: int,
    file_paths: bool,
    known_patients: dict[str, Iterable[str]] | None = None,
) -> None:
    """Check a loaded sheet; raise one error that lists every problem found.

    Parameters
    ----------
    sheet
        Output of :func:`load_sheet` (or a sheet built by a simulator).
    source
        Name used in messages (the sheet's path or the dataset).
    classes
        Allowed labels (the config's classes).
    n_folds
        Folds of the split: every class needs at least this many target patients.
    file_paths
        Whether ``path`` names files that must exist (image folders, FCS or bag files).
    known_patients
        For ``scrna``: cohort -> patient ids present in that cohort's ``.h5ad``.

    Raises
    ------
    SampleSheetError
        Naming the rows: empty patient ids, duplicate patients, unknown labels or cohorts,
        missing files, patients absent from the ``.h5ad``, classes too small for the folds.
    """
    problems: list[str] = []
    empty = sheet["patient"] == ""
    if empty.any():
        problems.append(f"empty patient id at {_rows(sheet, empty)}")
    dup = sheet["patient"].duplicated(keep=False) & ~empty
    if dup.any():
        problems.append(f"duplicate patient ids at {_rows(sheet, dup)}")
    bad_label = ~sheet["label"].isin(list(classes))
    if bad_label.any():
        problems.append(f"label not among the config's classes {list(classes)} at {_rows(sheet, bad_label)}")
    bad_cohort = ~sheet["cohort"].isin(COHORTS)
    if bad_cohort.any():
        problems.append(f"cohort must be one of {list(COHORTS)} at {_rows(sheet, bad_cohort)}")
    if file_paths:
        missing = ~sheet["path"].map(lambda x: Path(x).exists())
        if missing.any():
            problems.append(f"path does not exist at {_rows(sheet, missing, path=True)}")
    if known_patients is not None:
        for cohort, ids in known_patients.items():
            ids = set(ids)
            absent = (sheet["cohort"] == cohort) & ~sheet["path"].isin(ids)
            if absent.any():
                problems.append(f"patient not found in the {cohort} .h5ad at {_rows(sheet, absent)}")
    target = sheet[(sheet["cohort"] == "target") & ~bad_label]
    counts = target["label"].value_counts()
    for cls in classes:
        n = int(counts.get(cls, 0))
        if 0 < n < n_folds:
            problems.append(
                f"class {cls!r} has {n} target patient{'s' if n > 1 else ''} but splits.n_folds={n_folds} "
                f"needs at least {n_folds} (one per test fold)"
            )
    if problems:
        raise SampleSheetError(f"sample sheet {source}:\n  - " + "\n  - ".join(problems))


def check_bag_files(sheet: pd.DataFrame, *, source: str) -> int:
    """Check a ``bags`` sheet's files before any job runs: readable, 2-d, non-empty, one embedding width.

    Only the shapes are read (no features), so this is cheap for any number of bags. Values
    (NaN or Inf) are checked when a bag is imported.

    Parameters
    ----------
    sheet
        Output of :func:`load_sheet` whose ``path`` column names existing ``.h5`` bag files
        (check with :func:`check_sheet` first).
    source
        Name used in messages (the sheet's path).

    Returns
    -------
    int
        The embedding width shared by every bag.

    Raises
    ------
    SampleSheetError
        Naming the rows (and files) that cannot be read, have no instances, or whose width
        differs from the most common one.
    """
    problems: list[str] = []
    widths = pd.Series(-1, index=sheet.index)
    for i, path in sheet["path"].items():
        try:
            n, widths[i] = bag_shape(path)
        except BagFileError as exc:
            problems.append(f"line {i + 2} ({sheet.at[i, 'patient']}): {exc}")
            continue
        if n == 0:
            problems.append(f"line {i + 2} ({sheet.at[i, 'patient']}): {path} has zero instances")
    readable = widths[widths >= 0]
    width = int(readable.value_counts().idxmax()) if len(readable) else -1
    odd = (widths >= 0) & (widths != width)
    if odd.any():
        detail = ", ".join(
            f"line {i + 2} ({sheet.at[i, 'patient']}: {sheet.at[i, 'path']}) has {widths[i]}" for i in sheet.index[odd]
        )
        problems.append(
            f"embedding widths differ: {int((widths == width).sum())} bags have width {width}, but {detail}"
        )
    if problems:
        raise SampleSheetError(f"sample sheet {source}:\n  - " + "\n  - ".join(problems))
    return width
