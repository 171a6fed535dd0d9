"""Reading the workflow's own tab-separated tables back, ids and labels exactly as written.

pandas' default reader turns the strings ``NA``, ``None``, ``nan``, ``null`` and the empty string into missing
values, so a patient called ``NA`` or a class called ``None`` would silently become NaN. Every table the workflow
writes and reads again (``splits.tsv``, ``patients.tsv``, predictions, attention, realism, the flow panel) goes
through :func:`read_tsv`: its text columns are read verbatim as strings, the others as numbers where missing values
(empty fields, ``nan``) are NaN. Every such table is written by :func:`write_tsv` (atomically: a reader never sees
half a table), and a fold's patients table is read by :func:`read_patients`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable

import pandas as pd

from recipe_mil.io.atomic import atomic_path

TEXT_COLUMNS: frozenset[str] = frozenset(
    {
        "patient",
        "label",
        "path",
        "cohort",
        "role",
        "dataset",
        "scenario",
        "method",
        "class",
        "true",
        "predicted",
        "missing_class",
        "instance_id",
        "feature",
        "generator",
        "source",
    }
)
"""Columns that hold ids, names or labels anywhere in the workflow's tables: always strings, never missing."""

MISSING_NUMBERS: tuple[str, ...] = ("", "nan", "NaN", "-nan", "-NaN", "NA", "N/A", "null", "None", "<NA>")
"""What counts as a missing value in a numeric column (what ``DataFrame.to_csv`` writes for NaN, and its kin)."""


def read_tsv(path: str | os.PathLike[str], *, text: Iterable[str] = ()) -> pd.DataFrame:
    """Read a tab-separated table with explicit string handling.

    Parameters
    ----------
    path
        The file (with a header row).
    text
        Further columns to read as verbatim strings, besides :data:`TEXT_COLUMNS`.

    Returns
    -------
    pandas.DataFrame
        Text columns as ``str`` (``"NA"`` stays ``"NA"``, an empty field is ``""``); every other column
        parsed by pandas, with :data:`MISSING_NUMBERS` (only) as missing values.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh, delimiter="\t"), [])
    strings = TEXT_COLUMNS | set(text)
    return pd.read_csv(
        path,
        sep="\t",
        dtype={c: str for c in header if c in strings},
        keep_default_na=False,
        na_values={c: list(MISSING_NUMBERS) for c in header if c not in strings},
    )


def write_tsv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a table as tab-separated text with a header and no index, atomically.

    Parameters
    ----------
    frame
        The table.
    path
        Destination; its folder is created if needed. It is either absent or complete, never half-written
        (:func:`recipe_mil.io.atomic.atomic_path`).
    """
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


PATIENT_COLUMNS: tuple[str, ...] = ("patient", "label", "cohort", "role")
"""Columns every fold's patients table (``patients.tsv``, :func:`recipe_mil.splits.scenario_patients`) holds."""


def read_patients(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read one fold's patients table (``patients.tsv``: one row per patient with its label, cohort and role).

    Raises
    ------
    ValueError
        If a column of :data:`PATIENT_COLUMNS` is missing (naming the file).
    """
    patients = read_tsv(path)
    missing = [c for c in PATIENT_COLUMNS if c not in patients.columns]
    if missing:
        raise ValueError(f"patients table {path}: missing column(s) {missing}; found {list(patients.columns)}")
    return patients
