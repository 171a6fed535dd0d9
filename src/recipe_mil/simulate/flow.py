"""Simulated flow-cytometry cohorts with a known ground truth (docs/method.md §8).

One patient is one FCS 3.1 file (written with flowio) of a leukaemia-style panel: ``FSC-A``,
``SSC-A``, ten markers (CD45, CD34, CD117, CD33, CD13, HLA-DR, CD19, CD3, CD14, CD56) and
``Time``. Every event belongs to one population: T, B and NK lymphocytes, monocytes,
granulocytes, myeloid blasts (CD34+ CD117+ CD45 dim), or debris (low scatter, not a population
of the recipe). A population is a scatter position and a level per marker (negative, or a
log-normal intensity); a patient's events are spread over the populations by proportions drawn
from ``Dirichlet(concentration * m_c)``, ``m_c`` the class mean (``healthy``; ``aml`` with many
blasts; ``low_blast`` with few), its event count from a clipped normal, and a fixed fraction of
debris on top.

What a re-mix of population proportions does not capture comes on top (see
:mod:`recipe_mil.simulate.common`):

- *disease-only populations* (``disease_only``): a class's own aberrant population
  ``{class}_only``, present only in that class: blasts with a leukaemia-associated
  immunophenotype (``aml``: CD56+ CD19 dim, as in AML with t(8;21); ``low_blast``: CD56+ with
  less CD45; another class: two aberrant lineage markers chosen from its name);
- *state shifts* (``state_shift``, ``state_shift_magnitude``): in a class, a fraction of a shared
  population moves to a shifted sub-state whose channels move by ``state_shift_magnitude``
  (log10) times a fixed direction per population (:data:`STATE_SHIFT_DIRECTIONS`; e.g.
  dysplastic, hypogranular granulocytes: lower SSC and CD13; activated T cells: HLA-DR on);
- *patient effects* (``patient_effect_sd``): every file's channels get their own log10 gain
  (sample handling, staining, day-to-day instrument drift).

The detectors see the fluorochromes through a spillover matrix (stored in the file, so
uncompensated data are visibly wrong: a CD3+ T cell shows up on the CD33 detector), plus
electronic noise, and saturate at ``$PnR - 1``.

Instruments: ``"bd"`` (FACSDiva-like: ``$PnN`` fluorochrome detectors ``FITC-A``..., ``$PnS``
markers, ``$SPILLOVER``) for the target cohort; ``"beckman"`` (Navios-like: ``FS INT``,
``SS INT``, ``FL1-A``... detectors, markers spelled differently in ``$PnS`` such as ``cKit`` or
``CD45 KrO``, its own spillover in a ``SPILL`` keyword, ``TIME``) for the external cohort, with
per-channel intensity shifts. :data:`FLOW_PANEL` lists the aliases that match both.

The truth (populations, class means, disease-only and state-shift parameters, patients' drawn and
realised proportions and gains, spillover, channels) is written to ``flow_truth.json`` and every
event's population and state to ``flow_events.npz`` next to the files; :func:`read_flow_truth`,
:func:`event_populations`, :func:`event_states` and :func:`event_truth` read them back.
"""

from __future__ import annotations

import json
import os
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from recipe_mil.io.atomic import atomic_path
from recipe_mil.seeds import derive_seed
from recipe_mil.simulate.common import (
    STATES,
    cell_states,
    cohort_design,
    draw_bag_size,
    draw_instances,
    resolve_disease_only,
    resolve_state_shift,
    restrict_to_classes,
    state_truth,
)

TRUTH_FILE = "flow_truth.json"
"""Ground truth written next to the FCS files."""
EVENTS_FILE = "flow_events.npz"
"""Per-event truth, two arrays per patient: ``{patient}`` population codes (index into
``truth["event_labels"]``) and ``{patient}.state`` state codes (index into ``truth["states"]``)."""

MARKERS = ("CD45", "CD34", "CD117", "CD33", "CD13", "HLA-DR", "CD19", "CD3", "CD14", "CD56")
"""The panel's markers, in file order after ``FSC-A`` and ``SSC-A``."""
POPULATIONS = ("t_cells", "b_cells", "nk_cells", "monocytes", "granulocytes", "blasts")
"""Populations every class has (disease-only populations ``{class}_only`` come after them)."""
DEBRIS = "debris"
"""Label of debris events (low scatter, outside the populations' proportions)."""

FLOW_PANEL: list[dict[str, object]] = [
    {"marker": "FSC-A", "aliases": ["FS INT", "FSC"]},
    {"marker": "SSC-A", "aliases": ["SS INT", "SSC"]},
    {"marker": "CD45", "aliases": ["CD45 KrO", "CD45-V500"]},
    {"marker": "CD34", "aliases": ["CD34 PC5.5"]},
    {"marker": "CD117", "aliases": ["cKit", "c-kit"]},
    {"marker": "CD33", "aliases": []},
    {"marker": "CD13", "aliases": []},
    {"marker": "HLA-DR", "aliases": ["HLADR", "HLA DR PB"]},
    {"marker": "CD19", "aliases": []},
    {"marker": "CD3", "aliases": []},
    {"marker": "CD14", "aliases": []},
    {"marker": "CD56", "aliases": ["NCAM"]},
]
"""Panel (markers with aliases) matching both simulated instruments, for ``FlowEmbedParams.panel``."""

_DEFAULT_DISEASE_ONLY = {"aml": 0.05}  # built-in disease_only (known class names)
_DEFAULT_STATE_SHIFT = {"aml": {"granulocytes": 0.3}, "low_blast": {"granulocytes": 0.2}}  # built-in state_shift

STATE_SHIFT_DIRECTIONS: dict[str, dict[str, float]] = {
    "t_cells": {"HLA-DR": 3.0, "CD3": -1.0},  # activated: HLA-DR on, TCR/CD3 down
    "b_cells": {"CD19": -1.0, "HLA-DR": 1.0},
    "nk_cells": {"CD56": 1.0, "FSC-A": 0.3},  # CD56 bright
    "monocytes": {"HLA-DR": -2.0, "CD14": -1.0},  # HLA-DR low (stressed/dysplastic)
    "granulocytes": {"SSC-A": -1.0, "CD13": -1.0},  # dysplastic: hypogranular, CD13 low
    "blasts": {"CD34": -1.0, "CD117": 1.0, "CD45": -0.5},
}
"""Per shared population, the channels its shifted sub-state moves and by how many times
``state_shift_magnitude`` (log10 units; a scatter channel is multiplied by ``10**(d * m)``; a
marker the population does not express moves from the negative level ``log10(80)``)."""

# aberrant markers (log10 level) of a disease-only population on top of the blast phenotype
_DISEASE_ONLY_PHENOTYPES = {
    "aml": {"CD56": 3.3, "CD19": 2.9},
    "low_blast": {"CD56": 3.0, "CD45": 2.5},
}
_ABERRANT_MARKERS = ("CD19", "CD56", "CD3", "CD14")  # candidates for other classes' disease-only cells
_NEGATIVE_LOG = float(np.log10(80.0))  # log10 level a negative marker starts from when a shift turns it on

_DEFAULT_CLASS_PROPORTIONS = {
    #             T     B     NK    mono  gran  blasts
    "healthy": (0.20, 0.07, 0.05, 0.08, 0.59, 0.01),
    "aml": (0.10, 0.03, 0.03, 0.05, 0.34, 0.45),
    "low_blast": (0.18, 0.06, 0.05, 0.08, 0.55, 0.08),
}

# marker -> log10 median intensity (absent: negative) and scatter (FSC, SSC) medians
_POPULATION_LEVELS: dict[str, dict[str, float]] = {
    "t_cells": {"CD45": 4.0, "CD3": 3.4},
    "b_cells": {"CD45": 3.9, "CD19": 3.3, "HLA-DR": 3.6},
    "nk_cells": {"CD45": 3.9, "CD56": 3.2},
    "monocytes": {"CD45": 3.6, "CD14": 3.8, "CD33": 3.6, "CD13": 3.2, "HLA-DR": 3.4},
    "granulocytes": {"CD45": 3.2, "CD13": 3.6, "CD33": 2.7, "CD14": 2.5},
    "blasts": {"CD45": 2.8, "CD34": 3.5, "CD117": 3.2, "CD33": 3.1, "CD13": 3.0, "HLA-DR": 3.3},
    DEBRIS: {},
}
_POPULATION_SCATTER: dict[str, tuple[float, float]] = {
    "t_cells": (55_000, 18_000),
    "b_cells": (58_000, 17_000),
    "nk_cells": (60_000, 24_000),
    "monocytes": (95_000, 50_000),
    "granulocytes": (105_000, 130_000),
    "blasts": (72_000, 28_000),
    DEBRIS: (12_000, 9_000),
}
_LEVEL_SD = 0.15  # sd of log10 intensity within a population
_SCATTER_CV = 0.12  # coefficient of variation of scatter within a population (debris: 0.5)
_NEGATIVE_MEAN, _NEGATIVE_SD = 80.0, 60.0  # autofluorescence of a negative population
_NOISE_SD = 25.0  # electronic noise per detector
_RANGE = 262144  # $PnR of every channel (18-bit)
_EVENT_RATE = 2000.0  # events per second of acquisition
_TIMESTEP = 0.01

# fluorochrome of each marker, the order of the spillover matrix (by emission)
_FLUOROCHROMES = {
    "CD3": "FITC",
    "CD33": "PE",
    "CD56": "PE-CF594",
    "CD34": "PerCP-Cy5.5",
    "CD117": "PE-Cy7",
    "CD13": "APC",
    "CD19": "APC-H7",
    "HLA-DR": "BV421",
    "CD45": "V500",
    "CD14": "BV605",
}
_SPILL_ORDER = tuple(_FLUOROCHROMES)
_SPILL_ENTRIES = {  # (source fluorochrome's marker, detector's marker): fraction
    ("CD3", "CD33"): 0.22,
    ("CD3", "CD56"): 0.05,
    ("CD33", "CD56"): 0.30,
    ("CD33", "CD34"): 0.08,
    ("CD33", "CD117"): 0.03,
    ("CD56", "CD34"): 0.12,
    ("CD56", "CD117"): 0.06,
    ("CD34", "CD117"): 0.15,
    ("CD34", "CD13"): 0.02,
    ("CD117", "CD19"): 0.04,
    ("CD13", "CD19"): 0.18,
    ("CD13", "CD34"): 0.03,
    ("CD19", "CD117"): 0.05,
    ("HLA-DR", "CD45"): 0.20,
    ("HLA-DR", "CD14"): 0.03,
    ("CD45", "CD14"): 0.10,
    ("CD45", "CD3"): 0.06,
    ("CD14", "CD56"): 0.10,
}

_INSTRUMENTS: dict[str, dict[str, object]] = {
    "bd": {
        "cyt": "FACSCanto (simulated)",
        "scatter": ("FSC-A", "SSC-A"),
        "time": "Time",
        "detectors": {m: f"{f}-A" for m, f in _FLUOROCHROMES.items()},
        "markers": {m: m for m in MARKERS},
        "spill_keyword": "spillover",  # flowio writes $SPILLOVER
    },
    "beckman": {
        "cyt": "Navios (simulated)",
        "scatter": ("FS INT", "SS INT"),
        "time": "TIME",
        "detectors": {m: f"FL{i + 1}-A" for i, m in enumerate(_SPILL_ORDER)},
        "markers": {m: m for m in MARKERS} | {"CD117": "cKit", "CD45": "CD45 KrO", "HLA-DR": "HLA DR PB"},
        "spill_keyword": "spill",  # a non-standard keyword: flowio writes SPILL
    },
}


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
        self.classes = tuple(str(c) for c in self.classes)
        if not self.classes:
            raise ValueError("FlowSimParams: classes must not be empty")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"FlowSimParams: duplicate class names in {self.classes}")
        checks = {
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
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            detail = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"FlowSimParams: invalid value(s): {detail}")
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


def population_phenotype(name: str, shift: float = 0.0) -> tuple[dict[str, float], tuple[float, float]]:
    """Return a population's marker levels and scatter medians, optionally in its shifted sub-state.

    Parameters
    ----------
    name
        A shared population, ``debris`` or a disease-only population ``{class}_only`` (the
        blast phenotype with aberrant markers, see the module doc).
    shift
        ``state_shift_magnitude`` for the shifted sub-state (moved along
        :data:`STATE_SHIFT_DIRECTIONS`), 0 for the baseline.

    Returns
    -------
    levels
        Marker -> log10 median intensity (markers absent are negative).
    scatter
        (FSC, SSC) medians.
    """
    if name in _POPULATION_LEVELS:
        levels, scatter = dict(_POPULATION_LEVELS[name]), list(_POPULATION_SCATTER[name])
    else:
        cls = name.removesuffix("_only")
        aberrant = _DISEASE_ONLY_PHENOTYPES.get(cls)
        if aberrant is None:
            rng = np.random.default_rng(zlib.crc32(f"disease_only:{cls}".encode()))
            aberrant = {str(m): 3.0 for m in rng.choice(_ABERRANT_MARKERS, size=2, replace=False)}
        levels, scatter = {**_POPULATION_LEVELS["blasts"], **aberrant}, list(_POPULATION_SCATTER["blasts"])
    if shift:
        for channel, d in STATE_SHIFT_DIRECTIONS.get(name, {}).items():
            if channel in ("FSC-A", "SSC-A"):
                scatter[1 if channel == "SSC-A" else 0] *= 10 ** (d * shift)
            elif channel in levels or d > 0:
                levels[channel] = levels.get(channel, _NEGATIVE_LOG) + d * shift
    return levels, (scatter[0], scatter[1])


def spillover_matrix(instrument: str) -> tuple[list[str], np.ndarray]:
    """Return the spillover matrix of a simulated instrument.

    Parameters
    ----------
    instrument
        ``"bd"`` or ``"beckman"``.

    Returns
    -------
    detectors
        The instrument's ``$PnN`` of the fluorescence channels, in matrix order.
    matrix
        ``(10, 10)``, row = fluorochrome, column = detector, unit diagonal. ``beckman`` scales
        every off-diagonal entry by a fixed factor in [0.6, 1.4].
    """
    spec = _INSTRUMENTS[instrument]
    detectors = [spec["detectors"][m] for m in _SPILL_ORDER]  # type: ignore[index]
    pos = {m: i for i, m in enumerate(_SPILL_ORDER)}
    s = np.eye(len(_SPILL_ORDER))
    rng = np.random.default_rng(zlib.crc32(instrument.encode()))
    for (src, det), value in _SPILL_ENTRIES.items():
        factor = 1.0 if instrument == "bd" else float(rng.uniform(0.6, 1.4))
        s[pos[src], pos[det]] = value * factor
    return detectors, s


def _channels(instrument: str) -> tuple[list[str], list[str]]:
    """Return $PnN and $PnS of every channel (scatter, markers in MARKERS order, time)."""
    spec = _INSTRUMENTS[instrument]
    fsc, ssc = spec["scatter"]  # type: ignore[misc]
    pnn = [fsc, ssc] + [spec["detectors"][m] for m in MARKERS] + [spec["time"]]  # type: ignore[index]
    pns = ["", ""] + [spec["markers"][m] for m in MARKERS] + [""]  # type: ignore[index]
    return pnn, pns


def _simulate_events(
    rng: np.random.Generator,
    names: Sequence[str],
    pops: np.ndarray,
    codes: np.ndarray,
    shift: np.ndarray,
    spill: np.ndarray,
    magnitude: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (scatter n x 2, detector signals n x 10 in MARKERS order), before saturation.

    ``names[pops[i]]`` is event i's population, ``codes[i]`` its state (1: shifted by
    ``magnitude``); ``shift`` the per-channel gain (scatter, then MARKERS).
    """
    n = pops.size
    true = rng.normal(_NEGATIVE_MEAN, _NEGATIVE_SD, size=(n, len(MARKERS)))
    scatter = np.empty((n, 2))
    for k, name in enumerate(names):
        for state_shift in (0.0, magnitude):
            in_state = (codes == 1) if state_shift else (codes != 1)
            idx = np.flatnonzero((pops == k) & in_state)
            if idx.size == 0:
                continue
            levels, medians = population_phenotype(name, state_shift)
            for j, marker in enumerate(MARKERS):
                level = levels.get(marker)
                if level is not None:
                    true[idx, j] = 10 ** rng.normal(level, _LEVEL_SD, size=idx.size)
            cv = 0.5 if name == DEBRIS else _SCATTER_CV
            for j in range(2):
                scatter[idx, j] = medians[j] * np.exp(rng.normal(0.0, cv, size=idx.size))
    scatter *= shift[:2]
    true *= shift[2:]
    order = [MARKERS.index(m) for m in _SPILL_ORDER]  # spill order -> MARKERS columns
    detected_spill_order = true[:, order] @ spill
    detected = np.empty_like(detected_spill_order)
    detected[:, order] = detected_spill_order
    detected += rng.normal(0.0, _NOISE_SD, size=detected.shape)
    return scatter, detected


def _spill_text(detectors: Sequence[str], matrix: np.ndarray) -> str:
    values = ",".join(f"{v:.6g}" for v in matrix.ravel())
    return f"{len(detectors)},{','.join(detectors)},{values}"


def write_fcs_file(
    path: str | os.PathLike[str],
    events: np.ndarray,
    pnn: Sequence[str],
    pns: Sequence[str] | None = None,
    *,
    keywords: dict[str, str] | None = None,
) -> None:
    """Write float events to an FCS 3.1 file with flowio, atomically.

    Parameters
    ----------
    path
        Destination file.
    events
        Array (n_events x n_channels); stored as float32.
    pnn, pns
        Channel (``$PnN``) and marker (``$PnS``, ``""`` for none) names.
    keywords
        Further TEXT keywords, e.g. ``{"spillover": ...}`` (written ``$SPILLOVER``: flowio adds
        ``$`` to standard keywords only), ``{"p1r": "262144"}``.
    """
    import flowio

    data = array("f")
    data.frombytes(np.ascontiguousarray(events, dtype="<f4").tobytes())
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        flowio.create_fcs(fh, data, list(pnn), opt_channel_names=list(pns) if pns else None, metadata_dict=keywords)


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
    states = cell_states(POPULATIONS, class_mean_proportions(params), params.disease_only, params.state_shift)
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
    """Parameters of an external cohort from a different instrument.

    Parameters
    ----------
    params
        The target cohort's parameters (class means, concentration, event counts, patient-effect
        sd, and the disease-only populations and state shifts of ``classes`` are kept).
    classes
        Classes present in the external cohort.
    n_patients_per_class
        Patients per class.
    instrument
        The external instrument (different channel names, spillover and keywords).
    intensity_shift_sd
        Sd of its per-channel log10 intensity shift.
    seed_offset
        Added to ``params.seed``.

    Returns
    -------
    FlowSimParams
        With ``cohort="external"`` and ``patient_prefix="X"``.
    """
    return replace(
        params,
        classes=tuple(classes),
        n_patients_per_class=n_patients_per_class,
        disease_only=restrict_to_classes(params.disease_only or {}, classes),
        state_shift=restrict_to_classes(params.state_shift or {}, classes),
        instrument=instrument,
        intensity_shift_sd=intensity_shift_sd,
        seed=params.seed + seed_offset,
        cohort="external",
        patient_prefix="X",
    )


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
    """Return the population of every event of one simulated patient, in file order.

    Parameters
    ----------
    out_dir
        The cohort's folder.
    patient
        Patient id.

    Returns
    -------
    numpy.ndarray
        Strings from the truth's ``event_labels`` (:data:`POPULATIONS`, disease-only
        populations, ``"debris"``), one per event in the FCS file.
    """
    labels = np.array(read_flow_truth(out_dir)["event_labels"], dtype=object)
    return labels[_event_codes(out_dir, patient)]


def event_states(out_dir: str | os.PathLike[str], patient: str) -> np.ndarray:
    """Return the state (:data:`~recipe_mil.simulate.common.STATES`) of every event, in file order.

    Debris events are ``baseline``.

    Parameters
    ----------
    out_dir
        The cohort's folder.
    patient
        Patient id.

    Returns
    -------
    numpy.ndarray
        ``baseline``, ``shifted`` or ``disease_only``, one per event in the FCS file.
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
