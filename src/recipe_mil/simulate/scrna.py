"""Simulated single-cell RNA-seq cohorts with a known ground truth (docs/method.md §8).

A cohort is a set of patients, each a bag of cells. Every cell belongs to one of
``n_cell_types`` shared cell types or to a disease-only cell type; a cell type is a gene
program (a mean expression profile over the genes, with a block of marker genes raised by
``marker_log_fold``). Counts are negative binomial around ``library size x profile``.

A patient of class ``c`` draws its cell-type proportions from ``Dirichlet(concentration * m_c)``
(``m_c`` the class mean, so patients of one class differ in their mixes), its bag size from a
clipped normal (:func:`~recipe_mil.simulate.common.draw_bag_size`) and its cells' types from a
multinomial. What a re-mix of cell-type proportions does not capture comes on top
(:mod:`recipe_mil.simulate.common` describes the states):

- *disease-only cell types* (``disease_only``): a class's own gene program (``{class}_only``,
  with its own markers), present only in that class's patients;
- *state shifts* (``state_shift``, ``state_shift_magnitude``): in a class, a fraction of a
  shared cell type's cells switch on a state program (``n_markers_per_type`` other genes whose
  log means rise by ``state_shift_magnitude``), e.g. activated T cells;
- *patient effects* (``patient_effect_sd``): every patient's log means get a per-gene offset
  (sample handling, ambient RNA, processing batch), so one cell type looks slightly different in
  every patient.

The gene programs depend only on ``program_seed``, so a target cohort and an external
cohort share their cell types (disease-only and state programs included); the external cohort
adds a batch effect (a random per-gene and a smaller per-cell-type shift of the log means, sd
``batch_shift``). The truth is stored in ``obs`` (``cell_type``, ``state``) and in
``uns["recipe_mil_truth"]`` (see :func:`simulate_scrna_cohort`).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recipe_mil.io.atomic import atomic_path
from recipe_mil.seeds import derive_seed
from recipe_mil.simulate.common import (
    STATES,
    CellStates,
    SimParams,
    cohort_design,
    draw_bag_size,
    draw_instances,
    external_cohort_params,
    lookup_class_means,
    state_truth,
)

TRUTH_KEY = "recipe_mil_truth"
"""Key in ``AnnData.uns`` holding the simulator's ground truth."""

_DEFAULT_HEALTHY = (0.30, 0.25, 0.20, 0.13, 0.08, 0.04)
_DEFAULT_DISEASE_TYPES = {"disease_a": (4,), "disease_b": (5,)}
_DEFAULT_DISEASE_ONLY = {"disease_b": 0.05}  # built-in disease_only (known class names)
_DEFAULT_STATE_SHIFT = {"disease_a": {"type_0": 0.4}}  # built-in state_shift (known class names)
_MIN_GENERIC_PROPORTION = 0.02  # floor of a derived reference class's proportions
_TYPE_NOISE_SD = 0.2  # sd of a cell type's non-marker deviation from the shared log means
_BASE_LOG_SD = 1.0  # sd of the shared per-gene log means
_LIBRARY_LOG_SD = 0.3  # sd of the log library size across cells
_TYPE_BATCH_FRACTION = 0.25  # per-cell-type batch shift, relative to batch_shift


@dataclass
class ScrnaSimParams(SimParams):
    """Parameters of a simulated scRNA-seq cohort.

    Those every simulator has are described in :class:`~recipe_mil.simulate.common.SimParams`: here the cell
    types are gene programs (:func:`cell_type_names`; built-in class means: :func:`class_mean_proportions`),
    the instances are cells, ``state_shift_magnitude`` is the natural-log fold by which a shifted cell's state
    genes (``n_markers_per_type`` genes, not the type's markers, one set per cell type) exceed the baseline
    state, ``seed`` also draws the counts and the batch effect, and ``cohort`` is stored in ``obs["cohort"]``.

    Attributes
    ----------
    n_cell_types
        Number of cell types (gene programs).
    n_genes
        Number of genes.
    n_markers_per_type
        Marker genes per cell type (disjoint when ``n_cell_types * n_markers_per_type <= n_genes``).
    marker_log_fold
        Natural-log fold change of a cell type's markers over the shared expression.
    cells_per_patient_mean, cells_per_patient_sd
        Normal model of a patient's bag size (rounded).
    min_cells_per_patient
        Bag sizes are clipped to at least this many cells.
    dispersion
        Negative binomial size parameter (larger: closer to Poisson).
    library_size_mean
        Mean total counts per cell.
    program_seed
        Seed of the gene programs (the cell types' mean expression), shared by the target
        and the external cohort.
    batch_shift
        Sd of a per-gene shift of the log means (the external cohort's "other batch");
        a per-cell-type shift with a quarter of that sd is added on top. 0: no batch effect.
    proportion_shift
        With the built-in class means: the mass a disease class moves onto its cell type(s),
        taken from the other types proportionally (see :func:`class_mean_proportions`).
    patient_effect_sd
        Sd of every patient's per-gene offset of the log means (sample handling, ambient RNA,
        processing batch), shared by all its cells. 0: none.
    """

    classes: tuple[str, ...] = ("healthy", "disease_a", "disease_b")
    concentration: float = 20.0
    state_shift_magnitude: float = 1.0
    n_cell_types: int = 6
    n_genes: int = 600
    n_markers_per_type: int = 25
    marker_log_fold: float = 1.5
    cells_per_patient_mean: float = 300
    cells_per_patient_sd: float = 80
    min_cells_per_patient: int = 80
    dispersion: float = 5.0
    library_size_mean: float = 2000
    program_seed: int = 0
    batch_shift: float = 0.0
    proportion_shift: float = 0.25
    patient_effect_sd: float = 0.1

    BUILTIN_DISEASE_ONLY = _DEFAULT_DISEASE_ONLY
    BUILTIN_STATE_SHIFT = _DEFAULT_STATE_SHIFT

    def shared_cell_types(self) -> list[str]:
        """Return the names of the ``n_cell_types`` gene programs (:func:`cell_type_names`)."""
        return cell_type_names(self.n_cell_types)

    def _own_checks(self) -> dict[str, bool]:
        return {
            "n_cell_types": self.n_cell_types >= 1,
            "n_genes": self.n_genes >= 1,
            "n_markers_per_type": 0 <= self.n_markers_per_type <= self.n_genes,
            "cells_per_patient_mean": self.cells_per_patient_mean > 0,
            "cells_per_patient_sd": self.cells_per_patient_sd >= 0,
            "min_cells_per_patient": self.min_cells_per_patient >= 1,
            "dispersion": self.dispersion > 0,
            "library_size_mean": self.library_size_mean > 0,
            "batch_shift": self.batch_shift >= 0,
            "proportion_shift": 0 <= self.proportion_shift < 1,
            "patient_effect_sd": self.patient_effect_sd >= 0,
        }


def cell_type_names(n_cell_types: int) -> list[str]:
    """Names of the simulated cell types.

    Parameters
    ----------
    n_cell_types
        Number of cell types.

    Returns
    -------
    list[str]
        ``["type_0", "type_1", ...]``.
    """
    return [f"type_{k}" for k in range(n_cell_types)]


def _move_mass(base: np.ndarray, targets: Sequence[int], amounts: np.ndarray) -> np.ndarray:
    """Add ``amounts`` to ``base[targets]``, taking it from the other entries proportionally."""
    out = base.astype(np.float64).copy()
    others = np.ones(out.size, dtype=bool)
    others[list(targets)] = False
    total = float(np.sum(amounts))
    rest = float(out[others].sum())
    if rest <= total:
        raise ValueError(f"cannot move {total:.3f} of mass from types holding only {rest:.3f}")
    out[others] *= (rest - total) / rest
    out[list(targets)] += amounts
    return out / out.sum()


def _reference_proportions(n_cell_types: int, program_seed: int) -> np.ndarray:
    """Return the reference (``healthy``) class mean for the given number of cell types."""
    if n_cell_types == len(_DEFAULT_HEALTHY):
        return np.asarray(_DEFAULT_HEALTHY, dtype=np.float64)
    rng = np.random.default_rng([program_seed, zlib.crc32(b"reference")])
    p = np.sort(rng.dirichlet(np.full(n_cell_types, 5.0)))[::-1]
    p = np.maximum(p, _MIN_GENERIC_PROPORTION)
    return p / p.sum()


def class_mean_proportions(params: ScrnaSimParams) -> dict[str, np.ndarray]:
    """Mean cell-type proportions of every class over its ``n_cell_types`` shared types (the Dirichlet means).

    Class -> float64 vector summing to 1. With ``params.class_proportions`` set, those values (normalised; every
    class needs an entry; see :func:`~recipe_mil.simulate.common.lookup_class_means`). Otherwise the
    built-in defaults: ``healthy`` is ``[0.30, 0.25, 0.20, 0.13, 0.08, 0.04]`` for six cell
    types; ``disease_a`` and ``disease_b`` move ``proportion_shift`` (0.25) of mass onto
    ``type_4`` and ``type_5`` respectively, taken from the other types proportionally. For other class names or
    numbers of cell types the means are derived deterministically from ``program_seed``
    and the class name (so a class has the same mean in every cohort): the reference
    is a sorted Dirichlet draw, and each class other than ``healthy`` moves
    ``proportion_shift`` of mass onto one or two of the rarer half of the cell types.
    A class with a disease-only cell type scales these means by ``1 - disease_only[class]``
    (see :func:`recipe_mil.simulate.common.cell_states`).

    Raises
    ------
    ValueError
        If ``class_proportions`` lacks a class, has the wrong length or non-positive values.
    """
    k = params.n_cell_types
    if params.class_proportions is not None:
        missing = [c for c in params.classes if c not in params.class_proportions]
        if missing:
            raise ValueError(f"class_proportions has no entry for class(es) {missing}")
        return lookup_class_means(params, {})
    base = _reference_proportions(k, params.program_seed)
    out = {}
    for c in params.classes:
        if c == "healthy" or k == 1:
            out[c] = base.copy()
        elif k == len(_DEFAULT_HEALTHY) and c in _DEFAULT_DISEASE_TYPES:
            targets = _DEFAULT_DISEASE_TYPES[c]
            out[c] = _move_mass(base, targets, np.full(len(targets), params.proportion_shift / len(targets)))
        else:
            rng = np.random.default_rng([params.program_seed, zlib.crc32(c.encode())])
            rare = np.arange(k // 2, k)
            n_targets = int(min(rare.size, rng.integers(1, 3)))
            targets = np.sort(rng.choice(rare, size=n_targets, replace=False))
            amounts = params.proportion_shift * rng.dirichlet(np.full(n_targets, 2.0))
            out[c] = _move_mass(base, targets.tolist(), amounts)
    return out


def _pick_genes(rng: np.random.Generator, n_genes: int, size: int, avoid: np.ndarray) -> np.ndarray:
    """``size`` distinct genes, outside ``avoid`` where there are enough."""
    pool = np.setdiff1d(np.arange(n_genes), avoid)
    if pool.size < size:
        pool = np.arange(n_genes)
    return np.sort(rng.choice(pool, size=min(size, pool.size), replace=False))


def _gene_programs(
    params: ScrnaSimParams, states: CellStates
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Return the log mean expression of every cell type (types x genes), its marker genes and state genes.

    The shared types depend on ``program_seed`` only; a disease-only type and a shared type's
    state genes on ``program_seed`` and their name, so they are the same in every cohort.
    """
    k, g, m = params.n_cell_types, params.n_genes, params.n_markers_per_type
    rng = np.random.default_rng(params.program_seed)
    base = rng.normal(0.0, _BASE_LOG_SD, size=g)
    log_means = base[None, :] + rng.normal(0.0, _TYPE_NOISE_SD, size=(k, g))
    if k * m <= g:
        shared_markers = rng.permutation(g)[: k * m].reshape(k, m)
    else:
        shared_markers = np.stack([rng.choice(g, size=m, replace=False) for _ in range(k)])
    for t in range(k):
        log_means[t, shared_markers[t]] += params.marker_log_fold
    markers = {states.cell_types[t]: np.sort(shared_markers[t]) for t in range(k)}
    rows = [log_means]
    for name in states.cell_types[k:]:
        trng = np.random.default_rng([params.program_seed, zlib.crc32(f"disease_only:{name}".encode())])
        row = base + trng.normal(0.0, _TYPE_NOISE_SD, size=g)
        markers[name] = _pick_genes(trng, g, m, shared_markers.ravel())
        row[markers[name]] += params.marker_log_fold
        rows.append(row[None, :])
    state_genes = {}
    for name in states.cell_types[:k]:
        srng = np.random.default_rng([params.program_seed, zlib.crc32(f"state:{name}".encode())])
        state_genes[name] = _pick_genes(srng, g, m, markers[name])
    return np.concatenate(rows), markers, state_genes


def _softmax_rows(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def simulate_scrna_cohort(params: ScrnaSimParams) -> ad.AnnData:
    """Simulate one scRNA-seq cohort.

    Every patient has its own random stream (derived from ``seed``, the cohort and the patient
    id), so a patient's cells do not depend on the other patients.

    Parameters
    ----------
    params
        Simulation parameters.

    Returns
    -------
    anndata.AnnData
        Raw counts (CSR, float32) in ``X``; ``var_names`` gene ids ``gene_0000``...;
        ``obs_names`` unique barcodes ``{patient}_c{index}``; categorical ``obs`` columns
        ``patient``, ``label``, ``cohort``, ``cell_type`` (shared types ``type_k`` and
        disease-only types ``{class}_only``) and ``state`` (``baseline``, ``shifted``,
        ``disease_only``); ``uns["recipe_mil_truth"]`` a JSON-serialisable dict with the cell
        types, the class means over them, the disease-only and state-shift parameters, the
        concentration, every patient's label, bag size, drawn and realised proportions and
        per-gene effect (``patient_effects``, log scale), the marker genes of every type and
        the state genes of every shared type. Patients come in the order of
        :func:`cohort_design`.
    """
    design = cohort_design(params)
    states = params.cell_states(class_mean_proportions(params))
    gene_ids = [f"gene_{i:04d}" for i in range(params.n_genes)]
    log_means, markers, state_genes = _gene_programs(params, states)
    if params.batch_shift > 0:
        brng = np.random.default_rng([params.seed, zlib.crc32(b"batch")])
        log_means = (
            log_means
            + brng.normal(0.0, params.batch_shift, size=(1, params.n_genes))
            + brng.normal(0.0, params.batch_shift * _TYPE_BATCH_FRACTION, size=log_means.shape)
        )
    state_log_fold = np.zeros_like(log_means)
    for t, name in enumerate(states.cell_types[: states.n_shared]):
        state_log_fold[t, state_genes[name]] = params.state_shift_magnitude

    blocks: list[sp.csr_matrix] = []
    obs_parts: list[pd.DataFrame] = []
    drawn: dict[str, list[float]] = {}
    realised: dict[str, list[float]] = {}
    n_cells: dict[str, int] = {}
    effects: dict[str, list[float]] = {}
    for patient, label in zip(design["patient"], design["label"], strict=True):
        rng = np.random.default_rng(derive_seed(params.seed, "simulate_scrna", params.cohort, patient))
        erng = np.random.default_rng(derive_seed(params.seed, "scrna-patient-effect", params.cohort, patient))
        offset = erng.normal(0.0, params.patient_effect_sd, size=params.n_genes)
        size = draw_bag_size(
            rng, params.cells_per_patient_mean, params.cells_per_patient_sd, params.min_cells_per_patient
        )
        props, types, codes = draw_instances(rng, states, label, size, params.concentration)
        base_profiles = _softmax_rows(log_means + offset)
        shifted_profiles = _softmax_rows(log_means + state_log_fold + offset)
        profiles = np.where((codes == 1)[:, None], shifted_profiles[types], base_profiles[types])
        library = params.library_size_mean * np.exp(rng.normal(-0.5 * _LIBRARY_LOG_SD**2, _LIBRARY_LOG_SD, size=size))
        mu = library[:, None] * profiles
        counts = rng.poisson(rng.gamma(params.dispersion, mu / params.dispersion))
        blocks.append(sp.csr_matrix(counts.astype(np.float32)))
        obs_parts.append(
            pd.DataFrame(
                {"patient": patient, "label": label, "cohort": params.cohort, "cell_type": types, "state": codes},
                index=[f"{patient}_c{j:04d}" for j in range(size)],
            )
        )
        drawn[patient] = [float(x) for x in props]
        realised[patient] = [float(x) for x in np.bincount(types, minlength=len(states.cell_types)) / size]
        n_cells[patient] = size
        effects[patient] = [float(x) for x in offset]

    obs = pd.concat(obs_parts)
    obs["patient"] = pd.Categorical(obs["patient"], categories=list(design["patient"]))
    obs["label"] = pd.Categorical(obs["label"], categories=list(params.classes))
    obs["cohort"] = pd.Categorical(obs["cohort"], categories=[params.cohort])
    obs["cell_type"] = pd.Categorical.from_codes(obs["cell_type"].to_numpy(), categories=list(states.cell_types))
    obs["state"] = pd.Categorical.from_codes(obs["state"].to_numpy().astype(np.int64), categories=list(STATES))
    adata = ad.AnnData(
        X=sp.vstack(blocks, format="csr").astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(gene_ids, name="gene_id")),
    )
    adata.uns[TRUTH_KEY] = {
        "cohort": params.cohort,
        "classes": list(params.classes),
        **state_truth(states, params.classes, params.disease_only or {}),
        "state_shift_magnitude": float(params.state_shift_magnitude),
        "concentration": float(params.concentration),
        "patient_labels": dict(zip(design["patient"], design["label"], strict=True)),
        "patient_n_cells": n_cells,
        "patient_proportions": realised,
        "patient_drawn_proportions": drawn,
        "patient_effect_sd": float(params.patient_effect_sd),
        "patient_effects": effects,
        "marker_genes": {ct: [gene_ids[i] for i in markers[ct]] for ct in states.cell_types},
        "state_genes": {ct: [gene_ids[i] for i in genes] for ct, genes in state_genes.items()},
        "seed": int(params.seed),
        "program_seed": int(params.program_seed),
        "batch_shift": float(params.batch_shift),
    }
    return adata


def external_params(
    params: ScrnaSimParams,
    *,
    classes: Sequence[str] = ("healthy", "disease_a"),
    n_patients_per_class: int = 8,
    batch_shift: float = 0.5,
    seed_offset: int = 1000,
) -> ScrnaSimParams:
    """Parameters of an external cohort from another batch (see :func:`external_cohort_params`).

    The gene programs depend on ``program_seed`` only, so it has the target's cell types (disease-only and state
    programs included); ``batch_shift`` is the sd of its per-gene log-scale shift. Patient ids ``E000``...
    """
    return external_cohort_params(
        params, classes, n_patients_per_class, seed_offset=seed_offset, patient_prefix="E", batch_shift=batch_shift
    )


def write_h5ad_atomic(adata: ad.AnnData, path: str | os.PathLike[str]) -> None:
    """Write an AnnData to ``.h5ad`` atomically (complete file or none).

    Parameters
    ----------
    adata
        The data to write.
    path
        Destination file; its folder is created if needed.
    """
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
