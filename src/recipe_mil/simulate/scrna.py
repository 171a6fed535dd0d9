"""Simulated single-cell RNA-seq cohorts with a known ground truth (docs/method.md §8).

A cohort is a set of patients, each a bag of cells. Every cell belongs to one of
``n_cell_types`` cell types; a cell type is a gene program (a mean expression profile
over the genes, with a block of marker genes raised by ``marker_log_fold``). Counts are
negative binomial around ``library size x profile``.

The classes differ only in how their patients' cells spread over the cell types: a
patient of class ``c`` draws its proportions from ``Dirichlet(concentration * m_c)``
(``m_c`` the class mean, so patients of one class differ in their mixes), its bag size
from a clipped normal, and its cell types from a multinomial. This is exactly the
structure RECIPE models, and the truth is stored in ``uns["recipe_mil_truth"]``.

The gene programs depend only on ``program_seed``, so a target cohort and an external
cohort share their cell types; the external cohort adds a batch effect (a random
per-gene and a smaller per-cell-type shift of the log means, sd ``batch_shift``).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recipe_mil.io.atomic import atomic_path
from recipe_mil.simulate.common import cohort_design

TRUTH_KEY = "recipe_mil_truth"
"""Key in ``AnnData.uns`` holding the simulator's ground truth."""

_DEFAULT_HEALTHY = (0.30, 0.25, 0.20, 0.13, 0.08, 0.04)
_DEFAULT_DISEASE_TYPES = {"disease_a": (4,), "disease_b": (5,)}
_DISEASE_SHIFT = 0.25  # mass a disease class moves onto its disease cell type(s)
_MIN_GENERIC_PROPORTION = 0.02  # floor of a derived reference class's proportions
_TYPE_NOISE_SD = 0.2  # sd of a cell type's non-marker deviation from the shared log means
_BASE_LOG_SD = 1.0  # sd of the shared per-gene log means
_LIBRARY_LOG_SD = 0.3  # sd of the log library size across cells
_TYPE_BATCH_FRACTION = 0.25  # per-cell-type batch shift, relative to batch_shift


@dataclass
class ScrnaSimParams:
    """Parameters of a simulated scRNA-seq cohort.

    Attributes
    ----------
    classes
        Class labels, in the order patients are generated.
    n_patients_per_class
        Patients per class.
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
    concentration
        Dirichlet concentration of a patient's cell-type proportions around its class mean
        (smaller: more heterogeneous patients within a class).
    class_proportions
        Mean cell-type proportions per class (``n_cell_types`` positive values, normalised
        to sum 1). None: built-in defaults, see :func:`class_mean_proportions`.
    dispersion
        Negative binomial size parameter (larger: closer to Poisson).
    library_size_mean
        Mean total counts per cell.
    program_seed
        Seed of the gene programs (the cell types' mean expression), shared by the target
        and the external cohort.
    seed
        Seed of the patients, cells, counts and batch effect.
    cohort
        Cohort name stored in ``obs["cohort"]`` (``target`` or ``external``).
    patient_prefix
        Patient ids are ``{patient_prefix}{index:03d}``.
    batch_shift
        Sd of a per-gene shift of the log means (the external cohort's "other batch");
        a per-cell-type shift with a quarter of that sd is added on top. 0: no batch effect.
    """

    classes: tuple[str, ...] = ("healthy", "disease_a", "disease_b")
    n_patients_per_class: int = 12
    n_cell_types: int = 6
    n_genes: int = 600
    n_markers_per_type: int = 25
    marker_log_fold: float = 1.5
    cells_per_patient_mean: float = 300
    cells_per_patient_sd: float = 80
    min_cells_per_patient: int = 80
    concentration: float = 20.0
    class_proportions: dict[str, list[float]] | None = None
    dispersion: float = 5.0
    library_size_mean: float = 2000
    program_seed: int = 0
    seed: int = 0
    cohort: str = "target"
    patient_prefix: str = "P"
    batch_shift: float = 0.0

    def __post_init__(self) -> None:
        self.classes = tuple(str(c) for c in self.classes)
        if not self.classes:
            raise ValueError("ScrnaSimParams: classes must not be empty")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"ScrnaSimParams: duplicate class names in {self.classes}")
        checks = {
            "n_patients_per_class": self.n_patients_per_class >= 1,
            "n_cell_types": self.n_cell_types >= 1,
            "n_genes": self.n_genes >= 1,
            "n_markers_per_type": 0 <= self.n_markers_per_type <= self.n_genes,
            "cells_per_patient_mean": self.cells_per_patient_mean > 0,
            "cells_per_patient_sd": self.cells_per_patient_sd >= 0,
            "min_cells_per_patient": self.min_cells_per_patient >= 1,
            "concentration": self.concentration > 0,
            "dispersion": self.dispersion > 0,
            "library_size_mean": self.library_size_mean > 0,
            "batch_shift": self.batch_shift >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            detail = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"ScrnaSimParams: invalid value(s): {detail}")
        if not self.cohort:
            raise ValueError("ScrnaSimParams: cohort must not be empty")


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
    """Mean cell-type proportions of every class (the Dirichlet means).

    With ``params.class_proportions`` set, those values (normalised). Otherwise the
    built-in defaults: ``healthy`` is ``[0.30, 0.25, 0.20, 0.13, 0.08, 0.04]`` for six cell
    types; ``disease_a`` and ``disease_b`` move 0.25 of mass onto ``type_4`` and ``type_5``
    respectively, taken from the other types proportionally. For other class names or
    numbers of cell types the means are derived deterministically from ``program_seed``
    and the class name (so a class has the same mean in every cohort): the reference
    is a sorted Dirichlet draw, and each class other than ``healthy`` moves 0.25 of mass
    onto one or two of the rarer half of the cell types.

    Parameters
    ----------
    params
        Simulation parameters.

    Returns
    -------
    dict[str, numpy.ndarray]
        Class -> float64 vector of length ``n_cell_types`` summing to 1.

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
        out = {}
        for c in params.classes:
            p = np.asarray(params.class_proportions[c], dtype=np.float64)
            if p.shape != (k,) or not np.all(np.isfinite(p)) or np.any(p <= 0):
                raise ValueError(
                    f"class_proportions[{c!r}] must be {k} positive finite values, got {params.class_proportions[c]}"
                )
            out[c] = p / p.sum()
        return out
    base = _reference_proportions(k, params.program_seed)
    out = {}
    for c in params.classes:
        if c == "healthy" or k == 1:
            out[c] = base.copy()
        elif k == len(_DEFAULT_HEALTHY) and c in _DEFAULT_DISEASE_TYPES:
            targets = _DEFAULT_DISEASE_TYPES[c]
            out[c] = _move_mass(base, targets, np.full(len(targets), _DISEASE_SHIFT / len(targets)))
        else:
            rng = np.random.default_rng([params.program_seed, zlib.crc32(c.encode())])
            rare = np.arange(k // 2, k)
            n_targets = int(min(rare.size, rng.integers(1, 3)))
            targets = np.sort(rng.choice(rare, size=n_targets, replace=False))
            amounts = _DISEASE_SHIFT * rng.dirichlet(np.full(n_targets, 2.0))
            out[c] = _move_mass(base, targets.tolist(), amounts)
    return out


def _gene_programs(params: ScrnaSimParams) -> tuple[np.ndarray, np.ndarray]:
    """Return the log mean expression of every cell type (n_cell_types x n_genes) and the marker genes."""
    k, g, m = params.n_cell_types, params.n_genes, params.n_markers_per_type
    rng = np.random.default_rng(params.program_seed)
    base = rng.normal(0.0, _BASE_LOG_SD, size=g)
    log_means = base[None, :] + rng.normal(0.0, _TYPE_NOISE_SD, size=(k, g))
    if k * m <= g:
        markers = rng.permutation(g)[: k * m].reshape(k, m)
    else:
        markers = np.stack([rng.choice(g, size=m, replace=False) for _ in range(k)])
    for t in range(k):
        log_means[t, markers[t]] += params.marker_log_fold
    return log_means, markers


def _softmax_rows(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def simulate_scrna_cohort(params: ScrnaSimParams) -> ad.AnnData:
    """Simulate one scRNA-seq cohort.

    Parameters
    ----------
    params
        Simulation parameters.

    Returns
    -------
    anndata.AnnData
        Raw counts (CSR, float32) in ``X``; ``var_names`` gene ids ``gene_0000``...;
        ``obs_names`` unique barcodes ``{patient}_c{index}``; categorical ``obs`` columns
        ``patient``, ``label``, ``cohort``, ``cell_type``; ``uns["recipe_mil_truth"]`` a
        JSON-serialisable dict with the cell types, the class means, the concentration,
        every patient's label, bag size, drawn and realised proportions, and the marker genes.
        Patients come in the order of :func:`cohort_design`.
    """
    design = cohort_design(params)
    means = class_mean_proportions(params)
    cell_types = cell_type_names(params.n_cell_types)
    gene_ids = [f"gene_{i:04d}" for i in range(params.n_genes)]
    log_means, markers = _gene_programs(params)
    if params.batch_shift > 0:
        brng = np.random.default_rng([params.seed, zlib.crc32(b"batch")])
        log_means = (
            log_means
            + brng.normal(0.0, params.batch_shift, size=(1, params.n_genes))
            + brng.normal(0.0, params.batch_shift * _TYPE_BATCH_FRACTION, size=log_means.shape)
        )
    profiles = _softmax_rows(log_means)

    rng = np.random.default_rng([params.seed, zlib.crc32(b"patients")])
    blocks: list[sp.csr_matrix] = []
    obs_parts: list[pd.DataFrame] = []
    drawn: dict[str, list[float]] = {}
    realised: dict[str, list[float]] = {}
    n_cells: dict[str, int] = {}
    for patient, label in zip(design["patient"], design["label"], strict=True):
        props = rng.dirichlet(params.concentration * means[label])
        size = int(round(rng.normal(params.cells_per_patient_mean, params.cells_per_patient_sd)))
        size = max(params.min_cells_per_patient, size)
        per_type = rng.multinomial(size, props)
        types = rng.permutation(np.repeat(np.arange(params.n_cell_types), per_type))
        library = params.library_size_mean * np.exp(rng.normal(-0.5 * _LIBRARY_LOG_SD**2, _LIBRARY_LOG_SD, size=size))
        mu = library[:, None] * profiles[types]
        counts = rng.poisson(rng.gamma(params.dispersion, mu / params.dispersion))
        blocks.append(sp.csr_matrix(counts.astype(np.float32)))
        obs_parts.append(
            pd.DataFrame(
                {"patient": patient, "label": label, "cohort": params.cohort, "cell_type": types},
                index=[f"{patient}_c{j:04d}" for j in range(size)],
            )
        )
        drawn[patient] = [float(x) for x in props]
        realised[patient] = [float(x) for x in per_type / size]
        n_cells[patient] = size

    obs = pd.concat(obs_parts)
    obs["patient"] = pd.Categorical(obs["patient"], categories=list(design["patient"]))
    obs["label"] = pd.Categorical(obs["label"], categories=list(params.classes))
    obs["cohort"] = pd.Categorical(obs["cohort"], categories=[params.cohort])
    obs["cell_type"] = pd.Categorical.from_codes(obs["cell_type"].to_numpy(), categories=cell_types)
    adata = ad.AnnData(
        X=sp.vstack(blocks, format="csr").astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(gene_ids, name="gene_id")),
    )
    adata.uns[TRUTH_KEY] = {
        "cohort": params.cohort,
        "classes": list(params.classes),
        "cell_types": cell_types,
        "class_mean_proportions": {c: [float(x) for x in means[c]] for c in params.classes},
        "concentration": float(params.concentration),
        "patient_labels": dict(zip(design["patient"], design["label"], strict=True)),
        "patient_n_cells": n_cells,
        "patient_proportions": realised,
        "patient_drawn_proportions": drawn,
        "marker_genes": {ct: [gene_ids[i] for i in markers[t]] for t, ct in enumerate(cell_types)},
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
    """Parameters of an external cohort matching a target cohort.

    The external cohort shares the gene programs (``program_seed``) and the class means,
    but has its own patients (``seed + seed_offset``), a batch effect and ids ``E000``...

    Parameters
    ----------
    params
        The target cohort's parameters.
    classes
        Classes present in the external cohort.
    n_patients_per_class
        Patients per class in the external cohort.
    batch_shift
        Sd of the external cohort's per-gene log-scale shift.
    seed_offset
        Added to ``params.seed``.

    Returns
    -------
    ScrnaSimParams
        With ``cohort="external"`` and ``patient_prefix="E"``.
    """
    return replace(
        params,
        classes=tuple(classes),
        n_patients_per_class=n_patients_per_class,
        batch_shift=batch_shift,
        seed=params.seed + seed_offset,
        cohort="external",
        patient_prefix="E",
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
