"""Sample-sheet loading and checks that name the sheet's file and the offending line (docs/method.md §9)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from recipe_mil.io.bags import BagFileError, bag_shape
from recipe_mil.modalities import get_modality, sheet_column_owners
from recipe_mil.names import SAFE_NAME_RULE, is_safe_name

REQUIRED_COLUMNS = ("patient", "label")
COHORTS = ("target", "external")


class SampleSheetError(ValueError):
    """A sample sheet is malformed; the message names the file and rows."""


def raise_problems(source: str, problems: Sequence[str]) -> None:
    """Raise one :class:`SampleSheetError` listing every problem found in a sheet (nothing if there is none)."""
    if problems:
        raise SampleSheetError(f"sample sheet {source}:\n  - " + "\n  - ".join(problems))


def _rows(sheet: pd.DataFrame, mask: pd.Series, *, path: bool = False) -> str:
    # Data rows are numbered as a user sees them in an editor: header is line 1.
    def row(i: int) -> str:
        return f"line {i + 2} ({sheet.at[i, 'patient']}{': ' + str(sheet.at[i, 'path']) if path else ''})"

    return ", ".join(row(i) for i in sheet.index[mask])


def _read_text(p: Path) -> str:
    """Return a sheet's text; a file that is not UTF-8 is an error naming the file and line (a BOM is fine)."""
    data = p.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SampleSheetError(
            f"sample sheet {p}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "save it as UTF-8 (e.g. 'iconv -f latin1 -t utf-8')"
        ) from None


def load_sheet(path: str | os.PathLike[str], *, modality: str) -> pd.DataFrame:
    """Read a TSV sample sheet and fill defaults.

    Parameters
    ----------
    path
        Tab-separated file with columns ``patient``, ``label``, ``path`` (for ``scrna``
        optional: the patient id in the ``.h5ad``), optionally ``cohort`` and the modality's
        own optional columns (:attr:`recipe_mil.modalities.Modality.sheet_columns`; for ``flow``
        ``dataset``: which data set of a multi-data-set FCS file is the patient, 1-based; blank:
        the file's only one).
    modality
        A registered modality (:data:`recipe_mil.modalities.MODALITIES`): ``scrna``, ``bags``,
        ``image``, ``flow``.

    Returns
    -------
    pandas.DataFrame
        With string columns ``patient, label, path, cohort`` (and ``dataset`` for ``flow``,
        ``""`` where not given) and a default index.

    Raises
    ------
    SampleSheetError
        If the file is missing, empty, not UTF-8 text or malformed (a line with more fields
        than the header), a required column is absent, or a modality's own column (``dataset``)
        is given for another modality; the message names the file (and line).
    """
    p = Path(path)
    if not p.is_file():
        raise SampleSheetError(f"sample sheet {p} does not exist")
    text = _read_text(p)
    try:
        # every field is data, read verbatim: no NA parsing ("NA", "None", "nan" are ids like any other), no
        # comment character ('#' may be part of a path)
        sheet = pd.read_csv(
            io.StringIO(text), sep="\t", dtype=str, keep_default_na=False, na_values=[], skip_blank_lines=False
        )
    except pd.errors.EmptyDataError:
        raise SampleSheetError(f"sample sheet {p} is empty") from None
    except pd.errors.ParserError as exc:  # e.g. "Expected 3 fields in line 5, saw 4" (lines counted from 1)
        raise SampleSheetError(f"sample sheet {p}: malformed line ({exc}); fields must be separated by tabs") from None
    sheet.columns = [c.strip() for c in sheet.columns]
    # blank lines are kept while reading so that row i is line i + 2 of the file in every message; trailing ones
    # are dropped, one between patients is an error
    blank = (sheet == "").all(axis=1).to_numpy()
    n = len(blank)
    while n and blank[n - 1]:
        n -= 1
    if blank[:n].any():
        lines = ", ".join(str(i + 2) for i in blank[:n].nonzero()[0])
        raise SampleSheetError(f"sample sheet {p}: blank line(s) {lines} between patients; remove them")
    sheet = sheet.iloc[:n]
    spec = get_modality(modality)
    required = (*REQUIRED_COLUMNS, "path") if spec.path_names_file else REQUIRED_COLUMNS
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
    columns = ["patient", "label", "path", "cohort"]
    for column, owners in sheet_column_owners().items():
        if column in spec.sheet_columns:
            if column not in sheet:
                sheet[column] = ""
            columns.append(column)
        elif column in sheet:
            what = get_modality(owners[0]).sheet_columns[column]
            raise SampleSheetError(
                f"sample sheet {p}: column {column!r} ({what}) is for {' or '.join(owners)} data only"
            )
    return sheet[columns].reset_index(drop=True)


def check_sheet(
    sheet: pd.DataFrame,
    *,
    source: str,
    classes: Sequence[str],
    n_folds: int,
    file_paths: bool,
    known_patients: dict[str, Iterable[str]] | None = None,
    dataset: str | None = None,
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
    dataset
        The dataset's name (its key under ``datasets``), named in messages about its classes.

    Raises
    ------
    SampleSheetError
        Naming the rows: empty or unsafe patient ids (see :data:`recipe_mil.names.SAFE_NAME`),
        duplicate patients, unknown labels or cohorts, missing files, patients absent from the
        ``.h5ad``; naming the classes that have no target patient or too few for the folds; with
        a ``dataset`` column (flow), values that are not blank or a positive integer, and one
        file's data set listed for two patients.
    """
    problems: list[str] = []
    empty = sheet["patient"] == ""
    if empty.any():
        problems.append(f"empty patient id at {_rows(sheet, empty)}")
    unsafe = ~empty & ~sheet["patient"].map(is_safe_name)
    if unsafe.any():
        problems.append(f"patient id is not a plain name ({SAFE_NAME_RULE}) at {_rows(sheet, unsafe)}")
    dup = sheet["patient"].duplicated(keep=False) & ~empty
    if dup.any():
        problems.append(f"duplicate patient ids at {_rows(sheet, dup)}")
    bad_label = ~sheet["label"].isin(list(classes))
    if bad_label.any():
        problems.append(f"label not among the config's classes {list(classes)} at {_rows(sheet, bad_label)}")
    bad_cohort = ~sheet["cohort"].isin(COHORTS)
    if bad_cohort.any():
        problems.append(f"cohort must be one of {list(COHORTS)} at {_rows(sheet, bad_cohort)}")
    if "dataset" in sheet:
        bad_ds = ~sheet["dataset"].astype(str).str.fullmatch(r"([1-9][0-9]*)?")
        if bad_ds.any():
            problems.append(f"dataset must be blank or a data set number (1, 2, ...) at {_rows(sheet, bad_ds)}")
        same = sheet.duplicated(["path", "dataset"], keep=False) & ~bad_ds
        if same.any():
            problems.append(f"one file (and data set) listed for several patients at {_rows(sheet, same, path=True)}")
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
        if n == 0:
            problems.append(
                f"class {cls!r}{f' of dataset {dataset!r} (datasets.{dataset}.classes)' if dataset else ''} has "
                "no target-cohort patient: remove it from the classes or add its patients"
            )
        elif n < n_folds:
            problems.append(
                f"class {cls!r} has {n} target patient{'s' if n > 1 else ''} but splits.n_folds={n_folds} "
                f"needs at least {n_folds} (one per test fold)"
            )
    raise_problems(source, problems)


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
    raise_problems(source, problems)
    return width
