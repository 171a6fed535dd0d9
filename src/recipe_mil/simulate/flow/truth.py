"""The ground truth of a simulated flow cohort read back (per cohort and per event)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from recipe_mil.simulate.common import (
    STATES,
)
from recipe_mil.simulate.flow.panel import EVENTS_FILE, TRUTH_FILE


def read_flow_truth(out_dir: str | os.PathLike[str]) -> dict[str, object]:
    """Read the ground truth written by :func:`simulate_flow_cohort`.

    Parameters
    ----------
    out_dir
        The cohort's folder.

    Returns
    -------
    dict
        See :func:`simulate_flow_cohort` (class means, patients' labels, event counts, drawn
        and realised proportions, spillover, channels).
    """
    return json.loads((Path(out_dir) / TRUTH_FILE).read_text())


def _event_codes(out_dir: str | os.PathLike[str], key: str) -> np.ndarray:
    with np.load(Path(out_dir) / EVENTS_FILE) as z:
        if key not in z.files:
            raise KeyError(f"{Path(out_dir) / EVENTS_FILE}: no simulated patient {key.split('.')[0]!r}")
        return z[key].astype(np.int64)


def event_populations(out_dir: str | os.PathLike[str], patient: str) -> np.ndarray:
    """Return the population of every event of a simulated patient, in file order (parameters: :func:`event_truth`).

    One string per event in the FCS file, from the truth's ``event_labels`` (:data:`POPULATIONS`, disease-only
    populations, ``"debris"``).
    """
    labels = np.array(read_flow_truth(out_dir)["event_labels"], dtype=object)
    return labels[_event_codes(out_dir, patient)]


def event_states(out_dir: str | os.PathLike[str], patient: str) -> np.ndarray:
    """Return the state of every event of a simulated patient, in file order (parameters: :func:`event_truth`).

    One of :data:`~recipe_mil.simulate.common.STATES` (``baseline``, ``shifted``, ``disease_only``) per event in
    the FCS file; debris events are ``baseline``.
    """
    return np.array(STATES, dtype=object)[_event_codes(out_dir, f"{patient}.state")]


def event_truth(out_dir: str | os.PathLike[str], patient: str) -> pd.DataFrame:
    """Return the truth of every event of one simulated patient, indexed by event index.

    Parameters
    ----------
    out_dir
        The cohort's folder.
    patient
        Patient id.

    Returns
    -------
    pandas.DataFrame
        Index: the event's index in the FCS file as a string (a flow bag's instance id); columns
        ``cell_type`` (the population) and ``state``.

    Raises
    ------
    FileNotFoundError
        If the folder has no simulator truth.
    """
    for name in (TRUTH_FILE, EVENTS_FILE):
        if not (Path(out_dir) / name).is_file():
            raise FileNotFoundError(f"{Path(out_dir) / name}: no simulator truth for patient {patient!r}")
    cell_type = event_populations(out_dir, patient)
    return pd.DataFrame(
        {"cell_type": cell_type, "state": event_states(out_dir, patient)},
        index=pd.Index([str(i) for i in range(cell_type.size)], name="instance_id"),
    )
