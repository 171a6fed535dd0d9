"""The ground truth of a simulated blood-smear cohort read back (per cohort and per crop)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from recipe_mil.simulate.image.params import TRUTH_TSV


def read_image_truth(out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a simulated cohort's per-crop ground truth.

    Parameters
    ----------
    out_dir
        The folder given to :func:`simulate_image_cohort`.

    Returns
    -------
    pandas.DataFrame
        Columns ``patient``, ``label``, ``cohort``, ``instance_id``, ``cell_type``, ``state``.
    """
    return pd.read_csv(Path(out_dir) / TRUTH_TSV, sep="\t", dtype=str, keep_default_na=False)


def crop_truth(out_dir: str | os.PathLike[str], patient: str) -> pd.DataFrame:
    """Return the truth of one simulated patient's crops, indexed by file name.

    Parameters
    ----------
    out_dir
        The cohort's folder (the parent of the patient's folder).
    patient
        Patient id.

    Returns
    -------
    pandas.DataFrame
        Index: the crop's file name (an image bag's instance id); columns ``cell_type`` and
        ``state``.

    Raises
    ------
    FileNotFoundError
        If the folder has no :data:`TRUTH_TSV`.
    """
    where = Path(out_dir) / TRUTH_TSV
    if not where.is_file():
        raise FileNotFoundError(f"{where}: no simulator truth for patient {patient!r}")
    table = read_image_truth(out_dir)
    return table.loc[table["patient"] == patient].set_index("instance_id")[["cell_type", "state"]]
