"""Markers, populations, instruments and file names of the simulated flow cytometry (docs/method.md §8)."""

from __future__ import annotations

import numpy as np

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
