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

The package's modules: ``panel`` (markers, populations, instruments), ``params`` (:class:`FlowSimParams`),
``events`` (one patient's events and the FCS writer), ``cohort`` (:func:`simulate_flow_cohort`) and
``truth`` (the truth read back); every public name is importable from here.
"""

from recipe_mil.simulate.common import cohort_design
from recipe_mil.simulate.flow.cohort import external_flow_params, simulate_flow_cohort
from recipe_mil.simulate.flow.events import population_phenotype, spillover_matrix, write_fcs_file
from recipe_mil.simulate.flow.panel import (
    DEBRIS,
    EVENTS_FILE,
    FLOW_PANEL,
    MARKERS,
    POPULATIONS,
    STATE_SHIFT_DIRECTIONS,
    TRUTH_FILE,
)
from recipe_mil.simulate.flow.params import FlowSimParams, class_mean_proportions
from recipe_mil.simulate.flow.truth import event_populations, event_states, event_truth, read_flow_truth

__all__ = [
    "DEBRIS",
    "EVENTS_FILE",
    "FLOW_PANEL",
    "FlowSimParams",
    "MARKERS",
    "POPULATIONS",
    "STATE_SHIFT_DIRECTIONS",
    "TRUTH_FILE",
    "class_mean_proportions",
    "cohort_design",
    "event_populations",
    "event_states",
    "event_truth",
    "external_flow_params",
    "population_phenotype",
    "read_flow_truth",
    "simulate_flow_cohort",
    "spillover_matrix",
    "write_fcs_file",
]
