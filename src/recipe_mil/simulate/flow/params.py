"""Parameters of a simulated flow-cytometry cohort and its classes' mean proportions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recipe_mil.simulate.common import SimParams, lookup_class_means
from recipe_mil.simulate.flow.panel import (
    _DEFAULT_CLASS_PROPORTIONS,
    _DEFAULT_DISEASE_ONLY,
    _DEFAULT_STATE_SHIFT,
    _INSTRUMENTS,
    POPULATIONS,
)


@dataclass
class FlowSimParams(SimParams):
    """Parameters of a simulated flow-cytometry cohort.

    Those every simulator has are described in :class:`~recipe_mil.simulate.common.SimParams`: here the cell
    types are the populations :data:`POPULATIONS` (built-in class means for ``healthy``, ``aml`` and
    ``low_blast``), a disease-only population is an aberrant one (non-debris events only; see the module doc),
    ``state_shift_magnitude`` is in log10 units per unit of :data:`STATE_SHIFT_DIRECTIONS` (0.08: a factor of
    1.2 on a direction of 1; 0.3: a factor of 2) and ``seed`` also draws the intensity shift.

    Attributes
    ----------
    events_mean, events_sd
        Normal model of a patient's number of events (rounded), debris included.
    min_events
        Event counts are clipped to at least this many.
    debris_fraction
        Fraction of every file's events that are debris.
    instrument
        ``"bd"`` or ``"beckman"``: channel names, keywords and spillover (see the module doc).
    intensity_shift_sd
        Sd of a per-channel log10 gain shift of the instrument (0: none), drawn from ``seed``.
    patient_effect_sd
        Sd of every patient's per-channel log10 gain (scatter and markers; 0: none).
    """

    classes: tuple[str, ...] = ("healthy", "aml", "low_blast")
    concentration: float = 30.0
    state_shift_magnitude: float = 0.08
    patient_prefix: str = "F"
    events_mean: float = 3000
    events_sd: float = 800
    min_events: int = 500
    debris_fraction: float = 0.03
    instrument: str = "bd"
    intensity_shift_sd: float = 0.0
    patient_effect_sd: float = 0.05

    BUILTIN_DISEASE_ONLY = _DEFAULT_DISEASE_ONLY
    BUILTIN_STATE_SHIFT = _DEFAULT_STATE_SHIFT
    SHARED_CELL_TYPES = POPULATIONS

    def _own_checks(self) -> dict[str, bool]:
        return {
            "events_mean": self.events_mean > 0,
            "events_sd": self.events_sd >= 0,
            "min_events": self.min_events >= 1,
            "debris_fraction": 0 <= self.debris_fraction < 1,
            "instrument": self.instrument in _INSTRUMENTS,
            "intensity_shift_sd": self.intensity_shift_sd >= 0,
            "patient_effect_sd": self.patient_effect_sd >= 0,
        }


def class_mean_proportions(params: FlowSimParams) -> dict[str, np.ndarray]:
    """Mean population proportions of every class over :data:`POPULATIONS` (the Dirichlet means).

    See :func:`~recipe_mil.simulate.common.lookup_class_means`. Built in: ``healthy``
    ``[0.20, 0.07, 0.05, 0.08, 0.59, 0.01]``, ``aml`` 45% blasts, ``low_blast`` 8% blasts.
    """
    return lookup_class_means(params, _DEFAULT_CLASS_PROPORTIONS)
