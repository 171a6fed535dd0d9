"""Pieces every simulator shares: patient ids and the cohort design."""

from __future__ import annotations

from typing import Protocol

import pandas as pd


class CohortParams(Protocol):
    """What :func:`cohort_design` needs of a simulator's parameters."""

    classes: tuple[str, ...]
    n_patients_per_class: int
    patient_prefix: str
    cohort: str


def patient_ids(params: CohortParams) -> list[str]:
    """Patient ids ``{prefix}{index}``, zero-padded to at least three digits, grouped by class."""
    n = len(params.classes) * params.n_patients_per_class
    width = max(3, len(str(n - 1)))
    return [f"{params.patient_prefix}{i:0{width}d}" for i in range(n)]


def cohort_design(params: CohortParams) -> pd.DataFrame:
    """List a simulated cohort's patients without simulating any data.

    Parameters
    ----------
    params
        A simulator's parameters.

    Returns
    -------
    pandas.DataFrame
        Columns ``patient``, ``label``, ``cohort``, one row per patient in the simulator's
        order (grouped by class, in the order of ``params.classes``).
    """
    labels = [c for c in params.classes for _ in range(params.n_patients_per_class)]
    return pd.DataFrame({"patient": patient_ids(params), "label": labels, "cohort": params.cohort})
