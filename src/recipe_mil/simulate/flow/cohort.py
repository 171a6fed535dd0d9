"""A simulated flow-cytometry cohort: one FCS file per patient plus the ground truth."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recipe_mil.io.atomic import atomic_path
from recipe_mil.seeds import derive_seed
from recipe_mil.simulate.common import (
    cohort_design,
    draw_bag_size,
    draw_instances,
    external_cohort_params,
    state_truth,
)
from recipe_mil.simulate.flow.events import _channels, _simulate_events, _spill_text, spillover_matrix, write_fcs_file
from recipe_mil.simulate.flow.panel import (
    _EVENT_RATE,
    _INSTRUMENTS,
    _RANGE,
    _TIMESTEP,
    DEBRIS,
    EVENTS_FILE,
    MARKERS,
    POPULATIONS,
    STATE_SHIFT_DIRECTIONS,
    TRUTH_FILE,
)
from recipe_mil.simulate.flow.params import FlowSimParams, class_mean_proportions


def simulate_flow_cohort(params: FlowSimParams, out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Simulate one cohort and write one FCS 3.1 file per patient plus the ground truth.

    Parameters
    ----------
    params
        Simulation parameters.
    out_dir
        Folder for ``{patient}.fcs``, :data:`TRUTH_FILE` and :data:`EVENTS_FILE` (all written
        atomically; created if needed).

    Returns
    -------
    pandas.DataFrame
        Columns ``patient``, ``label``, ``path`` (the FCS file), ``cohort``, in the order of
        :func:`cohort_design`.
    """
    out = Path(out_dir)
    design = cohort_design(params)
    states = params.cell_states(class_mean_proportions(params))
    names = [*states.cell_types, DEBRIS]
    pnn, pns = _channels(params.instrument)
    detectors, spill = spillover_matrix(params.instrument)
    srng = np.random.default_rng(derive_seed(params.seed, "flow-instrument", params.instrument))
    shift = 10 ** srng.normal(0.0, params.intensity_shift_sd, size=2 + len(MARKERS))
    spec = _INSTRUMENTS[params.instrument]
    keywords = {
        str(spec["spill_keyword"]): _spill_text(detectors, spill),
        "timestep": str(_TIMESTEP),
        "cyt": str(spec["cyt"]),
        **{f"p{i + 1}r": str(_RANGE) for i in range(len(pnn))},
    }

    paths, n_events, drawn, realised, gains = [], {}, {}, {}, {}
    codes: dict[str, np.ndarray] = {}
    for patient, label in zip(design["patient"], design["label"], strict=True):
        rng = np.random.default_rng(derive_seed(params.seed, "flow-patient", params.cohort, patient))
        erng = np.random.default_rng(derive_seed(params.seed, "flow-patient-effect", params.cohort, patient))
        gain = erng.normal(0.0, params.patient_effect_sd, size=2 + len(MARKERS))
        n = draw_bag_size(rng, params.events_mean, params.events_sd, params.min_events)
        n_debris = int(rng.binomial(n, params.debris_fraction))
        props, types, state_codes = draw_instances(rng, states, label, n - n_debris, params.concentration)
        order = rng.permutation(n)  # debris interleaved with the cells
        pops = np.full(n, len(names) - 1, dtype=np.int8)
        event_state = np.zeros(n, dtype=np.int8)
        pops[order[: n - n_debris]] = types
        event_state[order[: n - n_debris]] = state_codes
        scatter, detected = _simulate_events(
            rng, names, pops, event_state, shift * 10**gain, spill, params.state_shift_magnitude
        )
        time = np.sort(rng.uniform(0.0, n / _EVENT_RATE / _TIMESTEP, size=n))
        events = np.column_stack([np.clip(scatter, 0, _RANGE - 1), np.minimum(detected, _RANGE - 1), time])
        path = out / f"{patient}.fcs"
        write_fcs_file(path, events, pnn, pns, keywords={**keywords, "fil": path.name})
        paths.append(str(path))
        n_events[patient] = n
        drawn[patient] = [float(x) for x in props]
        realised[patient] = [
            float(x) for x in np.bincount(types, minlength=len(states.cell_types)) / max(1, types.size)
        ]
        gains[patient] = [float(x) for x in gain]
        codes[patient] = pops
        codes[f"{patient}.state"] = event_state

    cell_truth = state_truth(states, params.classes, params.disease_only or {})
    truth = {
        "cohort": params.cohort,
        "instrument": params.instrument,
        "classes": list(params.classes),
        "populations": cell_truth.pop("cell_types"),
        **cell_truth,
        "event_labels": names,
        "state_shift_magnitude": float(params.state_shift_magnitude),
        "state_shift_directions": {p: STATE_SHIFT_DIRECTIONS[p] for p in POPULATIONS},
        "markers": list(MARKERS),
        "channels": {"pnn": pnn, "pns": pns},
        "concentration": float(params.concentration),
        "debris_fraction": float(params.debris_fraction),
        "patient_labels": dict(zip(design["patient"], design["label"], strict=True)),
        "patient_n_events": n_events,
        "patient_proportions": realised,
        "patient_drawn_proportions": drawn,
        "patient_effect_sd": float(params.patient_effect_sd),
        "patient_effects": gains,
        "spillover": {"detectors": detectors, "matrix": spill.tolist()},
        "intensity_shift": [float(x) for x in shift],
        "seed": int(params.seed),
    }
    with atomic_path(out / TRUTH_FILE) as tmp:
        tmp.write_text(json.dumps(truth, indent=1))
    with atomic_path(out / EVENTS_FILE) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, **codes)
    return design.assign(path=paths)[["patient", "label", "path", "cohort"]]


def external_flow_params(
    params: FlowSimParams,
    *,
    classes: Sequence[str] = ("healthy", "aml"),
    n_patients_per_class: int = 8,
    instrument: str = "beckman",
    intensity_shift_sd: float = 0.1,
    seed_offset: int = 1000,
) -> FlowSimParams:
    """Parameters of an external cohort from another instrument (see :func:`external_cohort_params`).

    ``instrument`` is its instrument (other channel names, spillover and keywords) and ``intensity_shift_sd`` the
    sd of its per-channel log10 intensity shift. Patient ids ``X000``...
    """
    return external_cohort_params(
        params,
        classes,
        n_patients_per_class,
        seed_offset=seed_offset,
        patient_prefix="X",
        instrument=instrument,
        intensity_shift_sd=intensity_shift_sd,
    )
