"""Parameters of a simulated flow-cytometry cohort and its classes' mean proportions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recipe_mil.simulate.common import (
    check_params,
    resolve_disease_only,
    resolve_state_shift,
)
from recipe_mil.simulate.flow.panel import (
    _DEFAULT_CLASS_PROPORTIONS,
    _DEFAULT_DISEASE_ONLY,
    _DEFAULT_STATE_SHIFT,
    _INSTRUMENTS,
    POPULATIONS,
)


@dataclass
class FlowSimParams:
    """Parameters of a simulated flow-cytometry cohort.

    Attributes
    ----------
    classes
        Class labels, in the order patients are generated.
    n_patients_per_class
        Patients per class.
    events_mean, events_sd
        Normal model of a patient's number of events (rounded), debris included.
    min_events
        Event counts are clipped to at least this many.
    concentration
        Dirichlet concentration of a patient's population proportions around its class mean
        (smaller: more heterogeneous patients within a class).
    class_proportions
        Mean proportions per class over :data:`POPULATIONS` (six positive values, normalised).
        None: built-in means for ``healthy``, ``aml`` and ``low_blast``; another class name
        then needs an entry.
    debris_fraction
        Fraction of every file's events that are debris.
    instrument
        ``"bd"`` or ``"beckman"``: channel names, keywords and spillover (see the module doc).
    intensity_shift_sd
        Sd of a per-channel log10 gain shift of the instrument (0: none), drawn from ``seed``.
    disease_only
        Class -> mean fraction of its patients' (non-debris) events in its own aberrant
        population ``{class}_only`` (see the module doc). None: the built-in ``{"aml": 0.05}``
        (for the classes present); ``{}``: none.
    state_shift
        Class -> shared population -> fraction of that population's events in the shifted
        sub-state. None: the built-in ``{"aml": {"granulocytes": 0.3}, "low_blast":
        {"granulocytes": 0.2}}``; ``{}``: none.
    state_shift_magnitude
        Size of the shift in log10 units per unit of :data:`STATE_SHIFT_DIRECTIONS` (0.08: a
        factor of 1.2 on a direction of 1; 0.3: a factor of 2).
    patient_effect_sd
        Sd of every patient's per-channel log10 gain (scatter and markers; 0: none).
    seed
        Seed of the patients, events and intensity shift.
    cohort
        Cohort name (``target`` or ``external``).
    patient_prefix
        Patient ids are ``{patient_prefix}{index:03d}``.
    """

    classes: tuple[str, ...] = ("healthy", "aml", "low_blast")
    n_patients_per_class: int = 12
    events_mean: float = 3000
    events_sd: float = 800
    min_events: int = 500
    concentration: float = 30.0
    class_proportions: dict[str, list[float]] | None = None
    debris_fraction: float = 0.03
    instrument: str = "bd"
    intensity_shift_sd: float = 0.0
    disease_only: dict[str, float] | None = None
    state_shift: dict[str, dict[str, float]] | None = None
    state_shift_magnitude: float = 0.08
    patient_effect_sd: float = 0.05
    seed: int = 0
    cohort: str = "target"
    patient_prefix: str = "F"

    def __post_init__(self) -> None:
        check_params(
            self,
            {
                "n_patients_per_class": self.n_patients_per_class >= 1,
                "events_mean": self.events_mean > 0,
                "events_sd": self.events_sd >= 0,
                "min_events": self.min_events >= 1,
                "concentration": self.concentration > 0,
                "debris_fraction": 0 <= self.debris_fraction < 1,
                "instrument": self.instrument in _INSTRUMENTS,
                "intensity_shift_sd": self.intensity_shift_sd >= 0,
                "state_shift_magnitude": self.state_shift_magnitude >= 0,
                "patient_effect_sd": self.patient_effect_sd >= 0,
                "cohort": bool(self.cohort),
            },
        )
        self.disease_only = resolve_disease_only(
            "FlowSimParams", self.classes, self.disease_only, _DEFAULT_DISEASE_ONLY
        )
        self.state_shift = resolve_state_shift(
            "FlowSimParams", self.classes, POPULATIONS, self.state_shift, _DEFAULT_STATE_SHIFT
        )


def class_mean_proportions(params: FlowSimParams) -> dict[str, np.ndarray]:
    """Mean population proportions of every class (the Dirichlet means).

    Parameters
    ----------
    params
        Simulation parameters.

    Returns
    -------
    dict[str, numpy.ndarray]
        Class -> float64 vector over :data:`POPULATIONS` summing to 1. Built-in: ``healthy``
        ``[0.20, 0.07, 0.05, 0.08, 0.59, 0.01]``, ``aml`` 45% blasts, ``low_blast`` 8% blasts.

    Raises
    ------
    ValueError
        If a class has no mean, or a given mean is not six positive values.
    """
    given = params.class_proportions or {}
    out = {}
    for c in params.classes:
        if c in given:
            p = np.asarray(given[c], dtype=np.float64)
        elif c in _DEFAULT_CLASS_PROPORTIONS:
            p = np.asarray(_DEFAULT_CLASS_PROPORTIONS[c], dtype=np.float64)
        else:
            raise ValueError(
                f"class {c!r} has no built-in population proportions "
                f"({sorted(_DEFAULT_CLASS_PROPORTIONS)}); give class_proportions"
            )
        if p.shape != (len(POPULATIONS),) or not np.all(np.isfinite(p)) or np.any(p <= 0):
            raise ValueError(f"class_proportions[{c!r}] must be {len(POPULATIONS)} positive values, got {list(p)}")
        out[c] = p / p.sum()
    return out
