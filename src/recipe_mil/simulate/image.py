"""Simulated blood-smear cohorts: single white-cell crops with a known ground truth (docs/method.md §8).

Every crop shows one white blood cell near its centre on a pale background with a few
red blood cells. The cell types and their look (Giemsa / May-Grünwald-Giemsa style):

===============  ===================================================================
``neutrophil``   segmented nucleus (2-4 lobes joined by thin filaments), pale lilac
                 cytoplasm with fine granules
``lymphocyte``   small cell, round dense nucleus, thin rim of light-blue cytoplasm
``monocyte``     large cell, kidney-shaped nucleus with lacy chromatin, grey-blue
                 cytoplasm with a few vacuoles
``myeloblast``   large round nucleus with fine chromatin and 1-3 nucleoli, high
                 nucleus-to-cell ratio, deep-blue (basophilic) cytoplasm
``eosinophil``   bilobed nucleus, cytoplasm packed with orange-red granules
===============  ===================================================================

and two morphologies that only disease-only cell types use (:data:`DISEASE_ONLY_MORPHOLOGIES`):

=========================  =========================================================
``abnormal_promyelocyte``  large cell, eccentric oval nucleus with a nucleolus,
                           cytoplasm packed with coarse purple azurophilic granules
                           and 0-3 Auer rods (as in acute promyelocytic leukaemia)
``smudge_cell``            a ruptured cell: a pale, smeared, irregular nucleus with
                           streaky chromatin and no cytoplasm (as in CLL)
=========================  =========================================================

Images are rendered in optical density (Beer-Lambert): every structure adds a stain
concentration times a stain colour vector, and ``RGB = background * exp(-OD)``. Each
cell gets its own size, rotation, shape and stain jitter; each patient a stain and size
factor; a cohort a stain shift (``stain_shift``: stronger blue absorbance, weaker red,
a yellower background), which is how the external cohort differs.

A patient of class ``c`` draws its proportions from ``Dirichlet(concentration * m_c)``, its
number of crops from a clipped normal and its cell types from a multinomial, as in the scRNA-seq
simulator. What a re-mix of cell-type proportions does not capture comes on top (see
:mod:`recipe_mil.simulate.common`):

- *disease-only cell types* (``disease_only``): a class's own morphology ``{class}_only``
  (``disease_only_morphology``; built in: ``aml`` abnormal promyelocytes), present only in that
  class;
- *state shifts* (``state_shift``, ``state_shift_magnitude``): in a class, a fraction of a shared
  cell type's cells change their look along :data:`STATE_SHIFT_DIRECTIONS` (dysplastic
  neutrophils: hypogranular and hyposegmented; reactive lymphocytes: larger with more, bluer
  cytoplasm; ...), by ``state_shift_magnitude`` times each direction;
- *patient effects* (``patient_stain_sd``, ``patient_size_sd``): every patient's stain and
  cell size factors (slide preparation, staining batch).

Every patient has its own random streams (derived from ``seed``, the cohort and the patient id),
so a patient's crops do not depend on the other patients.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from recipe_mil.io.atomic import atomic_path, write_text_atomic
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

CELL_TYPES: tuple[str, ...] = ("neutrophil", "lymphocyte", "monocyte", "myeloblast", "eosinophil")
"""The simulated white-cell types, in the order of every proportion vector."""

DISEASE_ONLY_MORPHOLOGIES: tuple[str, ...] = ("abnormal_promyelocyte", "smudge_cell")
"""Morphologies a disease-only cell type can have (see the module doc)."""

TRUTH_TSV = "cell_types.tsv"
"""Per-crop ground truth written into a cohort's folder (patient, label, cohort, instance_id, cell_type, state)."""

TRUTH_JSON = "truth.json"
"""Per-cohort ground truth (cell types, class means, disease-only and state-shift parameters,
concentration, per-patient proportions, sizes and stain/size effects)."""

STATE_SHIFT_DIRECTIONS: dict[str, dict[str, float]] = {
    "neutrophil": {"granules": -3.0, "lobes": -2.0, "size": -0.2},  # dysplastic: hypogranular, hyposegmented
    "lymphocyte": {"size": 1.0, "nucleus_ratio": -0.4, "basophilia": 1.0},  # reactive: large, blue cytoplasm
    "monocyte": {"vacuoles": 2.0, "size": 0.3},  # activated: vacuolated
    "myeloblast": {"size": 0.5, "nucleus_ratio": 0.1},
    "eosinophil": {"granules": -2.0, "vacuoles": 2.0},  # hypogranular, vacuolated
}
"""Per shared cell type, how its shifted sub-state looks, per unit of ``state_shift_magnitude``:
``size`` (log radius factor), ``nucleus_ratio`` (log factor of the nucleus-to-cell radius),
``granules`` (log factor of the granule density), ``basophilia`` (log factor of the cytoplasm
stain), ``vacuoles`` (log factor of the number of vacuoles), ``lobes`` (change in the number of
nuclear lobes, randomly rounded)."""

_DEFAULT_DISEASE_ONLY = {"aml": 0.04}  # built-in disease_only (known class names)
_DEFAULT_DISEASE_ONLY_MORPHOLOGY = {"aml": "abnormal_promyelocyte"}  # other classes: smudge_cell
_DEFAULT_STATE_SHIFT = {"aml": {"neutrophil": 0.3}, "eosinophilia": {"lymphocyte": 0.3}}

DEFAULT_CLASS_PROPORTIONS: dict[str, tuple[float, ...]] = {
    "healthy": (0.55, 0.30, 0.08, 0.02, 0.05),
    "aml": (0.33, 0.22, 0.08, 0.32, 0.05),
    "eosinophilia": (0.42, 0.26, 0.08, 0.02, 0.22),
    "low_blast": (0.47, 0.28, 0.08, 0.12, 0.05),
}
"""Built-in mean proportions over :data:`CELL_TYPES` of the known class names."""

_REFERENCE_SIZE = 96  # geometry below is in pixels of a 96-px crop and scaled with image_size
_BACKGROUND = np.array([0.95, 0.925, 0.90])  # transmitted light of the empty slide (RGB, 0-1)
_BACKGROUND_HAZE = np.array([0.01, 0.03, 0.02])  # faint plasma/eosin tint (OD)
# stain colour vectors (OD per unit concentration, natural log, R G B)
_V_NUCLEUS = np.array([0.80, 1.00, 0.42])  # violet chromatin
_V_RBC = np.array([0.06, 0.45, 0.30])  # salmon-pink erythrocytes
_V_EOS_GRANULE = np.array([0.05, 0.70, 0.95])  # orange-red eosinophil granules
_V_NEUT_GRANULE = np.array([0.14, 0.26, 0.10])  # faint lilac neutrophil granules
_V_AZUROPHILIC = np.array([0.55, 0.95, 0.40])  # coarse purple-red azurophilic granules
_V_AUER = np.array([0.20, 0.85, 0.55])  # red-pink Auer rods
_V_CYTOPLASM = {
    "neutrophil": np.array([0.10, 0.20, 0.10]),
    "lymphocyte": np.array([0.45, 0.22, 0.06]),
    "monocyte": np.array([0.30, 0.26, 0.18]),
    "myeloblast": np.array([0.58, 0.32, 0.08]),
    "eosinophil": np.array([0.10, 0.20, 0.14]),
    "abnormal_promyelocyte": np.array([0.45, 0.30, 0.10]),
    "smudge_cell": np.array([0.10, 0.10, 0.05]),
}
# per type: cell radius (px at 96), cytoplasm concentration, nucleus concentration,
# chromatin texture amplitude and correlation length (px)
_TYPE_GEOMETRY = {
    "neutrophil": dict(radius=19.0, cyto=1.0, nucleus=1.30, texture=0.15, grain=1.2),
    "lymphocyte": dict(radius=14.0, cyto=0.9, nucleus=1.55, texture=0.12, grain=1.2),
    "monocyte": dict(radius=25.0, cyto=0.9, nucleus=0.95, texture=0.28, grain=1.3),
    "myeloblast": dict(radius=22.0, cyto=0.8, nucleus=1.00, texture=0.06, grain=0.8),
    "eosinophil": dict(radius=20.0, cyto=0.8, nucleus=1.25, texture=0.15, grain=1.2),
    "abnormal_promyelocyte": dict(radius=26.0, cyto=0.9, nucleus=0.95, texture=0.08, grain=0.9),
    "smudge_cell": dict(radius=17.0, cyto=0.0, nucleus=0.60, texture=0.45, grain=2.5),
}
_EDGE = 0.7  # soft edge width of every shape (px)
_STAIN_SHIFT_GAIN = np.array([0.25, 0.0, -0.25])  # log OD gain per channel, per unit stain_shift
_STAIN_SHIFT_BACKGROUND = np.array([0.0, -0.03, -0.09])  # log background change per unit stain_shift


@dataclass
class ImageSimParams:
    """Parameters of a simulated blood-smear cohort.

    Attributes
    ----------
    classes
        Class labels, in the order patients are generated. Known names (``healthy``,
        ``aml``, ``eosinophilia``, ``low_blast``) have built-in proportions; any other
        name needs ``class_proportions``.
    n_patients_per_class
        Patients per class.
    crops_per_patient_mean, crops_per_patient_sd
        Normal model of a patient's number of crops (rounded).
    min_crops_per_patient, max_crops_per_patient
        Crop numbers are clipped to this range.
    concentration
        Dirichlet concentration of a patient's cell-type proportions around its class
        mean (smaller: more heterogeneous patients within a class).
    class_proportions
        Mean proportions over :data:`CELL_TYPES` per class (five positive values,
        normalised to sum 1). None: :data:`DEFAULT_CLASS_PROPORTIONS`.
    image_size
        Side of the square RGB crops (px). The cell geometry scales with it.
    size_jitter
        Sd of a cell's log size factor.
    patient_size_sd
        Sd of a patient's log size factor (shared by its cells).
    stain_jitter
        Sd of a cell's log stain-intensity factors (per stain and per channel).
    patient_stain_sd
        Sd of a patient's log stain-intensity factors.
    stain_shift
        Cohort-wide stain shift (0: none; 1: red-channel absorbance x1.28, blue x0.78,
        yellower background).
    disease_only
        Class -> mean fraction of its patients' crops showing its own disease-only cell type
        ``{class}_only``. None: the built-in ``{"aml": 0.04}`` (for the classes present);
        ``{}``: none.
    disease_only_morphology
        Class -> the morphology of its disease-only type, one of
        :data:`DISEASE_ONLY_MORPHOLOGIES`. Classes not listed: ``aml`` abnormal promyelocytes,
        any other ``smudge_cell``.
    state_shift
        Class -> shared cell type -> fraction of that type's crops in the shifted sub-state.
        None: the built-in ``{"aml": {"neutrophil": 0.3}, "eosinophilia": {"lymphocyte": 0.3}}``;
        ``{}``: none.
    state_shift_magnitude
        Size of the shift per unit of :data:`STATE_SHIFT_DIRECTIONS` (0.5: a reactive
        lymphocyte's radius x e^0.5 = 1.65).
    rbc_mean
        Mean number of red blood cells per crop (Poisson).
    noise_sd
        Sd of the pixel noise (intensity, 0-255 scale).
    image_format
        ``"png"``, ``"jpeg"`` or ``"tiff"``.
    seed
        Seed of the patients, cells and rendering.
    cohort
        Cohort name (``target`` or ``external``).
    patient_prefix
        Patient ids are ``{patient_prefix}{index:03d}``.
    """

    classes: tuple[str, ...] = ("healthy", "aml", "eosinophilia")
    n_patients_per_class: int = 10
    crops_per_patient_mean: float = 60
    crops_per_patient_sd: float = 20
    min_crops_per_patient: int = 20
    max_crops_per_patient: int = 120
    concentration: float = 10.0
    class_proportions: dict[str, list[float]] | None = None
    image_size: int = 96
    size_jitter: float = 0.08
    patient_size_sd: float = 0.03
    stain_jitter: float = 0.05
    patient_stain_sd: float = 0.05
    stain_shift: float = 0.0
    disease_only: dict[str, float] | None = None
    disease_only_morphology: dict[str, str] | None = None
    state_shift: dict[str, dict[str, float]] | None = None
    state_shift_magnitude: float = 0.5
    rbc_mean: float = 2.5
    noise_sd: float = 2.0
    image_format: str = "png"
    seed: int = 0
    cohort: str = "target"
    patient_prefix: str = "P"

    def __post_init__(self) -> None:
        self.classes = tuple(str(c) for c in self.classes)
        if not self.classes:
            raise ValueError("ImageSimParams: classes must not be empty")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"ImageSimParams: duplicate class names in {self.classes}")
        checks = {
            "n_patients_per_class": self.n_patients_per_class >= 1,
            "crops_per_patient_mean": self.crops_per_patient_mean > 0,
            "crops_per_patient_sd": self.crops_per_patient_sd >= 0,
            "min_crops_per_patient": self.min_crops_per_patient >= 1,
            "max_crops_per_patient": self.max_crops_per_patient >= self.min_crops_per_patient,
            "concentration": self.concentration > 0,
            "image_size": self.image_size >= 48,
            "size_jitter": self.size_jitter >= 0,
            "patient_size_sd": self.patient_size_sd >= 0,
            "stain_jitter": self.stain_jitter >= 0,
            "patient_stain_sd": self.patient_stain_sd >= 0,
            "rbc_mean": self.rbc_mean >= 0,
            "noise_sd": self.noise_sd >= 0,
            "image_format": self.image_format in _FORMATS,
            "state_shift_magnitude": self.state_shift_magnitude >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            detail = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"ImageSimParams: invalid value(s): {detail}")
        if not self.cohort:
            raise ValueError("ImageSimParams: cohort must not be empty")
        self.disease_only = resolve_disease_only(
            "ImageSimParams", self.classes, self.disease_only, _DEFAULT_DISEASE_ONLY
        )
        self.state_shift = resolve_state_shift(
            "ImageSimParams", self.classes, CELL_TYPES, self.state_shift, _DEFAULT_STATE_SHIFT
        )
        given = dict(self.disease_only_morphology or {})
        bad_morph = {c: m for c, m in given.items() if m not in DISEASE_ONLY_MORPHOLOGIES}
        if bad_morph:
            raise ValueError(
                f"ImageSimParams: disease_only_morphology {bad_morph}: choose from {list(DISEASE_ONLY_MORPHOLOGIES)}"
            )
        self.disease_only_morphology = {
            c: given.get(c, _DEFAULT_DISEASE_ONLY_MORPHOLOGY.get(c, "smudge_cell")) for c in self.disease_only
        }


_FORMATS = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg"), "tiff": ("TIFF", ".tif")}


def class_mean_proportions(params: ImageSimParams) -> dict[str, np.ndarray]:
    """Mean cell-type proportions of every class (the Dirichlet means).

    Parameters
    ----------
    params
        Simulation parameters.

    Returns
    -------
    dict[str, numpy.ndarray]
        Class -> float64 vector over :data:`CELL_TYPES` summing to 1.

    Raises
    ------
    ValueError
        If a class has no proportions (neither given nor built in), or they are not five
        positive finite values.
    """
    given = params.class_proportions or {}
    out = {}
    for c in params.classes:
        if c in given:
            raw = given[c]
        elif c in DEFAULT_CLASS_PROPORTIONS:
            raw = DEFAULT_CLASS_PROPORTIONS[c]
        else:
            known = sorted(DEFAULT_CLASS_PROPORTIONS)
            raise ValueError(f"class {c!r} has no built-in proportions ({known}): give class_proportions[{c!r}]")
        p = np.asarray(raw, dtype=np.float64)
        if p.shape != (len(CELL_TYPES),) or not np.all(np.isfinite(p)) or np.any(p <= 0):
            raise ValueError(
                f"class_proportions[{c!r}] must be {len(CELL_TYPES)} positive finite values "
                f"(over {list(CELL_TYPES)}), got {raw}"
            )
        out[c] = p / p.sum()
    return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian random field with unit sd and correlation length ``sigma`` (px)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    sd = field.std()
    return field / sd if sd > 0 else field


def _soft(sdf: np.ndarray) -> np.ndarray:
    """Soft inside-indicator of a signed distance (negative inside)."""
    return 1.0 / (1.0 + np.exp(np.clip(sdf / _EDGE, -30, 30)))


def _sdf_circle(x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return np.hypot(x - cx, y - cy) - r


def _sdf_segment(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, half_width: float) -> np.ndarray:
    """Signed distance to a capsule (a thick line segment from ``a`` to ``b``)."""
    ab = b - a
    t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1]) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    return np.hypot(x - a[0] - t * ab[0], y - a[1] - t * ab[1]) - half_width


def _sdf_blob(
    x: np.ndarray, y: np.ndarray, radius: float, rng: np.random.Generator, *, aspect: float, roughness: float
) -> np.ndarray:
    """Signed distance (approximate) to an irregular ellipse-like blob centred at the origin."""
    theta = np.arctan2(y, x)
    rho = np.hypot(x / aspect, y * aspect)
    r = np.full_like(theta, radius)
    for k in range(2, 6):
        r += radius * roughness * rng.normal() / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return rho - r


def _nucleus_sdf(
    cell_type: str,
    u: np.ndarray,
    w: np.ndarray,
    radius: float,
    rng: np.random.Generator,
    shift: dict[str, float] | None = None,
) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Signed distance of the nucleus in the cell's rotated frame, and its nucleoli (u, w, r).

    ``shift``: a shifted sub-state's knobs (``lobes``, ``nucleus_ratio``; see
    :data:`STATE_SHIFT_DIRECTIONS`), already multiplied by the magnitude.
    """
    shift = shift or {}
    nucleoli: list[tuple[float, float, float]] = []
    ratio = float(np.exp(shift.get("nucleus_ratio", 0.0)))
    if cell_type == "neutrophil":
        n_lobes = int(rng.choice([2, 3, 4], p=[0.1, 0.55, 0.35]))
        lobes = shift.get("lobes", 0.0)
        if lobes:  # random rounding: the expected change is ``lobes``
            n_lobes = max(1, n_lobes + int(np.floor(lobes + rng.uniform())))
        lobe_r = radius * rng.uniform(0.29, 0.33) * (1.0 if n_lobes < 4 else 0.88)
        arc_r = radius * rng.uniform(0.50, 0.62)
        # lobes on a C-shaped arc, neighbours separated by a gap of about 2 px
        step = 2 * np.arcsin(min(0.99, (2 * lobe_r + 2.2) / (2 * arc_r))) * rng.uniform(1.0, 1.08)
        start = -0.5 * step * (n_lobes - 1)
        centres = [
            np.array([arc_r * np.cos(start + j * step), arc_r * np.sin(start + j * step)]) for j in range(n_lobes)
        ]
        middle = np.mean(centres, axis=0)
        centres = [c - middle for c in centres]
        sdf = np.min([_sdf_circle(u, w, c[0], c[1], lobe_r * rng.uniform(0.9, 1.1)) for c in centres], axis=0)
        for a, b in zip(centres[:-1], centres[1:], strict=True):
            sdf = np.minimum(sdf, _sdf_segment(u, w, a, b, rng.uniform(0.5, 0.8)))
        return sdf, nucleoli
    if cell_type == "eosinophil":
        lobe_r = radius * rng.uniform(0.30, 0.35)
        half = lobe_r + rng.uniform(1.2, 2.5)
        a, b = np.array([-half, radius * 0.1]), np.array([half, radius * 0.1])
        sdf = np.minimum(
            _sdf_circle(u, w, a[0], a[1], lobe_r * rng.uniform(0.92, 1.08)),
            _sdf_circle(u, w, b[0], b[1], lobe_r * rng.uniform(0.92, 1.08)),
        )
        return np.minimum(sdf, _sdf_segment(u, w, a, b, rng.uniform(0.5, 0.8))), nucleoli
    if cell_type == "lymphocyte":
        r = min(radius * rng.uniform(0.78, 0.86) * ratio, 0.95 * radius)
        du = radius * rng.uniform(0.0, 0.12)
        return _sdf_blob(u - du, w, r, rng, aspect=rng.uniform(1.0, 1.08), roughness=0.02), nucleoli
    if cell_type == "monocyte":
        a_ax, b_ax = radius * rng.uniform(0.58, 0.66), radius * rng.uniform(0.42, 0.50)
        body = (np.hypot(u / a_ax, w / b_ax) - 1.0) * min(a_ax, b_ax)
        notch_r = radius * rng.uniform(0.26, 0.34)
        notch = _sdf_circle(u, w, 0.0, b_ax + notch_r * rng.uniform(0.25, 0.5), notch_r)
        return np.maximum(body, -notch), nucleoli
    if cell_type == "myeloblast":
        r = min(radius * rng.uniform(0.74, 0.82) * ratio, 0.95 * radius)
        sdf = _sdf_blob(u, w, r, rng, aspect=rng.uniform(1.0, 1.12), roughness=0.02)
        for _ in range(int(rng.integers(1, 4))):
            rr = r * np.sqrt(rng.uniform(0.0, 0.35))
            phi = rng.uniform(0, 2 * np.pi)
            nucleoli.append((rr * np.cos(phi), rr * np.sin(phi), radius * rng.uniform(0.09, 0.13)))
        return sdf, nucleoli
    if cell_type == "abnormal_promyelocyte":
        r = radius * rng.uniform(0.52, 0.60)
        off = radius - r * rng.uniform(1.05, 1.25)  # eccentric
        sdf = _sdf_blob(u - off, w, r, rng, aspect=rng.uniform(1.05, 1.2), roughness=0.03)
        nucleoli.append((off, 0.0, radius * rng.uniform(0.08, 0.11)))
        return sdf, nucleoli
    if cell_type == "smudge_cell":
        return _sdf_blob(u, w, radius * 0.95, rng, aspect=rng.uniform(1.1, 1.5), roughness=0.15), nucleoli
    raise ValueError(f"unknown cell type {cell_type!r}; expected one of {[*CELL_TYPES, *DISEASE_ONLY_MORPHOLOGIES]}")


def _granules(
    rng: np.random.Generator, region: np.ndarray, density: float, sigma: float, amplitude: float
) -> np.ndarray:
    """Concentration map of small granules scattered over ``region`` (soft mask)."""
    n = rng.poisson(density * float(region.sum()))
    out = np.zeros(region.shape)
    if n == 0:
        return out
    h, w = region.shape
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    keep = rng.uniform(size=n) < region[ys, xs]
    np.add.at(out, (ys[keep], xs[keep]), 1.0)
    return ndimage.gaussian_filter(out, sigma) * amplitude * 2 * np.pi * sigma**2


@dataclass
class _Look:
    """A patient's (or cohort's) stain and size factors."""

    stain_gain: np.ndarray  # (3,) per-channel log OD gain
    stain_strength: np.ndarray  # (4,) log factors: nucleus, cytoplasm, granules, rbc
    background: np.ndarray  # (3,) transmitted light of the slide
    size: float  # size factor


def _patient_look(params: ImageSimParams, rng: np.random.Generator) -> _Look:
    gain = params.stain_shift * _STAIN_SHIFT_GAIN + rng.normal(0.0, params.patient_stain_sd, 3)
    background = _BACKGROUND * np.exp(params.stain_shift * _STAIN_SHIFT_BACKGROUND + rng.normal(0.0, 0.01, 3))
    return _Look(
        stain_gain=gain,
        stain_strength=rng.normal(0.0, params.patient_stain_sd, 4),
        background=np.clip(background, 0.5, 1.0),
        size=float(np.exp(rng.normal(0.0, params.patient_size_sd))),
    )


def render_cell(
    cell_type: str,
    rng: np.random.Generator,
    *,
    image_size: int = 96,
    size_jitter: float = 0.08,
    stain_jitter: float = 0.05,
    rbc_mean: float = 2.5,
    noise_sd: float = 2.0,
    stain_shift: float = 0.0,
    state_shift: float = 0.0,
) -> np.ndarray:
    """Render one single-cell crop (no patient-level stain or size factor).

    Parameters
    ----------
    cell_type
        One of :data:`CELL_TYPES` or :data:`DISEASE_ONLY_MORPHOLOGIES`.
    rng
        Random generator (consumed).
    image_size
        Side of the square crop (px).
    size_jitter, stain_jitter, rbc_mean, noise_sd, stain_shift
        As in :class:`ImageSimParams`.
    state_shift
        0: the baseline look; otherwise the shifted sub-state with this magnitude (see
        :data:`STATE_SHIFT_DIRECTIONS`).

    Returns
    -------
    numpy.ndarray
        uint8 array of shape (image_size, image_size, 3), RGB.
    """
    look = _Look(
        stain_gain=stain_shift * _STAIN_SHIFT_GAIN,
        stain_strength=np.zeros(4),
        background=_BACKGROUND * np.exp(stain_shift * _STAIN_SHIFT_BACKGROUND),
        size=1.0,
    )
    return _render_cell(
        cell_type,
        rng,
        look=look,
        image_size=image_size,
        size_jitter=size_jitter,
        stain_jitter=stain_jitter,
        rbc_mean=rbc_mean,
        noise_sd=noise_sd,
        state_shift=state_shift,
    )


def _render_cell(
    cell_type: str,
    rng: np.random.Generator,
    *,
    look: _Look,
    image_size: int,
    size_jitter: float,
    stain_jitter: float,
    rbc_mean: float,
    noise_sd: float,
    state_shift: float = 0.0,
) -> np.ndarray:
    """Render one crop with a patient's stain and size factors (see :func:`render_cell`).

    ``state_shift``: the magnitude of the shifted sub-state (0: baseline), applied along
    :data:`STATE_SHIFT_DIRECTIONS`.
    """
    if cell_type not in _TYPE_GEOMETRY:
        raise ValueError(
            f"unknown cell type {cell_type!r}; expected one of {[*CELL_TYPES, *DISEASE_ONLY_MORPHOLOGIES]}"
        )
    geo = _TYPE_GEOMETRY[cell_type]
    knobs = {k: d * state_shift for k, d in STATE_SHIFT_DIRECTIONS.get(cell_type, {}).items()} if state_shift else {}
    s = image_size
    scale = s / _REFERENCE_SIZE
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    cx = (s - 1) / 2 + rng.normal(0.0, 1.5 * scale)
    cy = (s - 1) / 2 + rng.normal(0.0, 1.5 * scale)
    x, y = xx - cx, yy - cy
    theta = rng.uniform(0.0, 2 * np.pi)
    u = np.cos(theta) * x + np.sin(theta) * y
    w = -np.sin(theta) * x + np.cos(theta) * y
    radius = geo["radius"] * scale * look.size * float(np.exp(rng.normal(0.0, size_jitter) + knobs.get("size", 0.0)))

    roughness = 0.05 if cell_type == "monocyte" else 0.025
    cell = _soft(_sdf_blob(u, w, radius, rng, aspect=rng.uniform(1.0, 1.1), roughness=roughness))
    nuc_sdf, nucleoli = _nucleus_sdf(cell_type, u, w, radius, rng, knobs)
    nucleus = _soft(nuc_sdf) * cell
    chromatin = 1.0 + geo["texture"] * _smooth_noise(rng, (s, s), geo["grain"] * scale)
    nuc_conc = geo["nucleus"] * nucleus * np.clip(chromatin, 0.3, None)
    for nu, nw, nr in nucleoli:
        nuc_conc *= 1.0 - 0.55 * _soft(_sdf_circle(u, w, nu, nw, nr))
    cytoplasm = np.clip(cell - nucleus, 0.0, 1.0)

    jit = np.exp(look.stain_strength + rng.normal(0.0, stain_jitter, 4))
    od = nuc_conc[..., None] * _V_NUCLEUS * jit[0]
    basophilia = float(np.exp(knobs.get("basophilia", 0.0)))
    cyto_conc = geo["cyto"] * basophilia * cytoplasm * (1.0 + 0.08 * _smooth_noise(rng, (s, s), 2.0 * scale))
    od = od + cyto_conc[..., None] * _V_CYTOPLASM[cell_type] * jit[1]
    granules = float(np.exp(knobs.get("granules", 0.0)))
    if cell_type == "eosinophil":
        gran = _granules(rng, cytoplasm, granules * 0.45 / scale**2, 0.8 * scale, 0.55) + 0.25 * granules * cytoplasm
        od = od + gran[..., None] * _V_EOS_GRANULE * jit[2]
    elif cell_type == "neutrophil":
        gran = _granules(rng, cytoplasm, granules * 0.10 / scale**2, 0.6 * scale, 0.35)
        od = od + gran[..., None] * _V_NEUT_GRANULE * jit[2]
    elif cell_type == "abnormal_promyelocyte":
        gran = _granules(rng, np.clip(cell - 0.5 * nucleus, 0.0, 1.0), 0.35 / scale**2, 0.9 * scale, 0.6)
        od = od + gran[..., None] * _V_AZUROPHILIC * jit[2]
        for _ in range(int(rng.integers(0, 4))):  # Auer rods: thin needles in the cytoplasm
            phi, rr = rng.uniform(0, 2 * np.pi), radius * rng.uniform(0.3, 0.6)
            centre = np.array([-rr * np.cos(phi), rr * np.sin(phi)])
            half = radius * rng.uniform(0.15, 0.3) * np.array([np.cos(phi + 1.3), np.sin(phi + 1.3)])
            rod = _soft(_sdf_segment(u, w, centre - half, centre + half, 0.7 * scale)) * cytoplasm
            od = od + 0.9 * rod[..., None] * _V_AUER * jit[2]
    n_vacuoles = {"monocyte": 3.0}.get(cell_type, 0.5 if "vacuoles" in knobs else 0.0)
    for _ in range(int(rng.poisson(n_vacuoles * np.exp(knobs.get("vacuoles", 0.0))))):
        rr, phi = radius * rng.uniform(0.55, 0.85), rng.uniform(0, 2 * np.pi)
        vac = _soft(_sdf_circle(u, w, rr * np.cos(phi), rr * np.sin(phi), rng.uniform(1.2, 2.2) * scale))
        od = od * (1.0 - 0.6 * (vac * cytoplasm)[..., None])

    rbc = np.zeros((s, s))
    for _ in range(int(rng.poisson(rbc_mean))):
        r_rbc = 12.0 * scale * look.size * float(np.exp(rng.normal(0.0, 0.06)))
        dist = radius + r_rbc * rng.uniform(0.75, 1.8)
        phi = rng.uniform(0, 2 * np.pi)
        bx, by = dist * np.cos(phi), dist * np.sin(phi)
        d = np.hypot(x - bx, y - by)
        pallor = 1.0 - 0.45 * np.exp(-0.5 * (d / (0.45 * r_rbc)) ** 2)
        rbc = np.maximum(rbc, _soft(d - r_rbc) * pallor)
    rbc = rbc * (1.0 - cell)  # the white cell lies on top
    od = od + 0.85 * rbc[..., None] * _V_RBC * jit[3]
    od = od * np.exp(look.stain_gain) + _BACKGROUND_HAZE

    rgb = look.background * np.exp(-od) * 255.0
    rgb = ndimage.gaussian_filter(rgb, sigma=(0.5 * scale, 0.5 * scale, 0.0))
    if noise_sd > 0:
        rgb = rgb + rng.normal(0.0, noise_sd, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


@dataclass
class PatientCrops:
    """One simulated patient's crops and their truth.

    Attributes
    ----------
    images
        uint8 RGB crops.
    cell_types
        The cell type of every crop (shared types or ``{class}_only``).
    states
        The state of every crop (``baseline``, ``shifted``, ``disease_only``).
    proportions
        The patient's drawn proportions over the cohort's cell types (the shared ones, then
        the disease-only ones).
    effect
        The patient's stain and size effects: ``stain_gain`` (3 per-channel log OD gains,
        the cohort's ``stain_shift`` included), ``stain_strength`` (4 log factors: nucleus,
        cytoplasm, granules, red cells) and ``log_size`` (log size factor).
    """

    images: list[np.ndarray]
    cell_types: list[str]
    states: list[str]
    proportions: np.ndarray
    effect: dict[str, list[float] | float]


def simulate_patient_images(params: ImageSimParams, patient: str, label: str) -> PatientCrops:
    """Render one patient's crops (in memory).

    Parameters
    ----------
    params
        Simulation parameters.
    patient
        Patient id; with ``params.seed`` and ``params.cohort`` it seeds the patient's random
        streams (one for the stain and size effects, one for the crops).
    label
        The patient's class.

    Returns
    -------
    PatientCrops
        The crops, each crop's cell type and state, the drawn proportions and the patient's
        effects.
    """
    states = cell_states(CELL_TYPES, class_mean_proportions(params), params.disease_only, params.state_shift)
    if label not in states.means:
        raise ValueError(f"label {label!r} is not one of the classes {list(params.classes)}")
    erng = np.random.default_rng(derive_seed(params.seed, "image-patient-effect", params.cohort, patient))
    look = _patient_look(params, erng)
    rng = np.random.default_rng(derive_seed(params.seed, "simulate_image", params.cohort, patient))
    n = draw_bag_size(
        rng,
        params.crops_per_patient_mean,
        params.crops_per_patient_sd,
        params.min_crops_per_patient,
        params.max_crops_per_patient,
    )
    props, types, codes = draw_instances(rng, states, label, n, params.concentration)
    morphology = {states.disease_only_type[c]: m for c, m in (params.disease_only_morphology or {}).items()} | {
        t: t for t in CELL_TYPES
    }
    names = [states.cell_types[t] for t in types]
    images = [
        _render_cell(
            morphology[name],
            rng,
            look=look,
            image_size=params.image_size,
            size_jitter=params.size_jitter,
            stain_jitter=params.stain_jitter,
            rbc_mean=params.rbc_mean,
            noise_sd=params.noise_sd,
            state_shift=params.state_shift_magnitude if code == 1 else 0.0,
        )
        for name, code in zip(names, codes, strict=True)
    ]
    effect: dict[str, list[float] | float] = {
        "stain_gain": [float(x) for x in look.stain_gain],
        "stain_strength": [float(x) for x in look.stain_strength],
        "log_size": float(np.log(look.size)),
    }
    return PatientCrops(images, names, [STATES[c] for c in codes], props, effect)


def write_image(image: np.ndarray, path: str | os.PathLike[str], *, image_format: str | None = None) -> None:
    """Write one uint8 image atomically (PNG, JPEG or TIFF by suffix or ``image_format``).

    Parameters
    ----------
    image
        uint8 array (H, W) or (H, W, 3|4).
    path
        Destination file.
    image_format
        ``"png"``, ``"jpeg"`` or ``"tiff"``; None: from the suffix.
    """
    if image_format is None:
        suffix = Path(path).suffix.lower()
        image_format = next((k for k, (_, ext) in _FORMATS.items() if ext == suffix), None)
        image_format = image_format or {".jpeg": "jpeg", ".tiff": "tiff"}.get(suffix)
        if image_format is None:
            raise ValueError(f"{path}: cannot tell the image format from the suffix; give image_format")
    pil_format = _FORMATS[image_format][0]
    options = {"quality": 95} if pil_format == "JPEG" else {}
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format=pil_format, **options)


def simulate_image_cohort(params: ImageSimParams, out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Simulate one cohort and write one folder of crops per patient.

    Layout: ``{out_dir}/{patient}/{patient}_{index:04d}.png`` (or ``.jpg``/``.tif``),
    plus the ground truth ``{out_dir}/cell_types.tsv`` (one row per crop: ``patient``,
    ``label``, ``cohort``, ``instance_id`` = file name, ``cell_type``, ``state``) and
    ``{out_dir}/truth.json`` (cell types, class means, disease-only types and their
    morphologies, state shifts, concentration, and per patient: label, crop number, drawn and
    realised proportions, stain and size effects). Every file is written atomically.

    Parameters
    ----------
    params
        Simulation parameters.
    out_dir
        Destination folder (created if needed).

    Returns
    -------
    pandas.DataFrame
        The cohort's sample sheet: ``patient``, ``label``, ``path`` (the patient's folder,
        ``out_dir/patient``), ``cohort``, in the order of :func:`cohort_design`.
    """
    out = Path(out_dir)
    design = cohort_design(params)
    states = cell_states(CELL_TYPES, class_mean_proportions(params), params.disease_only, params.state_shift)
    ext = _FORMATS[params.image_format][1]
    rows: list[dict[str, str]] = []
    drawn: dict[str, list[float]] = {}
    realised: dict[str, list[float]] = {}
    n_crops: dict[str, int] = {}
    effects: dict[str, dict[str, list[float] | float]] = {}
    for patient, label in zip(design["patient"], design["label"], strict=True):
        crops = simulate_patient_images(params, patient, label)
        folder = out / patient
        folder.mkdir(parents=True, exist_ok=True)
        for j, (img, cell_type, state) in enumerate(zip(crops.images, crops.cell_types, crops.states, strict=True)):
            name = f"{patient}_{j:04d}{ext}"
            write_image(img, folder / name, image_format=params.image_format)
            rows.append(
                {
                    "patient": patient,
                    "label": label,
                    "cohort": params.cohort,
                    "instance_id": name,
                    "cell_type": cell_type,
                    "state": state,
                }
            )
        counts = np.array([crops.cell_types.count(t) for t in states.cell_types], dtype=np.float64)
        drawn[patient] = [float(x) for x in crops.proportions]
        realised[patient] = [float(x) for x in counts / counts.sum()]
        n_crops[patient] = len(crops.images)
        effects[patient] = crops.effect
    with atomic_path(out / TRUTH_TSV) as tmp:
        pd.DataFrame(rows, columns=["patient", "label", "cohort", "instance_id", "cell_type", "state"]).to_csv(
            tmp, sep="\t", index=False
        )
    truth = {
        "cohort": params.cohort,
        "classes": list(params.classes),
        **state_truth(states, params.classes, params.disease_only or {}),
        "disease_only_morphology": dict(params.disease_only_morphology or {}),
        "state_shift_magnitude": float(params.state_shift_magnitude),
        "state_shift_directions": STATE_SHIFT_DIRECTIONS,
        "concentration": float(params.concentration),
        "patient_labels": dict(zip(design["patient"], design["label"], strict=True)),
        "patient_n_crops": n_crops,
        "patient_proportions": realised,
        "patient_drawn_proportions": drawn,
        "patient_stain_sd": float(params.patient_stain_sd),
        "patient_size_sd": float(params.patient_size_sd),
        "patient_effects": effects,
        "stain_shift": float(params.stain_shift),
        "seed": int(params.seed),
    }
    write_text_atomic(out / TRUTH_JSON, json.dumps(truth, indent=1) + "\n")
    sheet = design.copy()
    sheet["path"] = [str(out / p) for p in design["patient"]]
    return sheet[["patient", "label", "path", "cohort"]]


def read_image_truth(out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a simulated cohort's per-crop ground truth.

    Parameters
    ----------
    out_dir
        The folder given to :func:`simulate_image_cohort`.

    Returns
    -------
    pandas.DataFrame
        Columns ``patient``, ``label``, ``cohort``, ``instance_id``, ``cell_type``, ``state``.
    """
    return pd.read_csv(Path(out_dir) / TRUTH_TSV, sep="\t", dtype=str, keep_default_na=False)


def crop_truth(out_dir: str | os.PathLike[str], patient: str) -> pd.DataFrame:
    """Return the truth of one simulated patient's crops, indexed by file name.

    Parameters
    ----------
    out_dir
        The cohort's folder (the parent of the patient's folder).
    patient
        Patient id.

    Returns
    -------
    pandas.DataFrame
        Index: the crop's file name (an image bag's instance id); columns ``cell_type`` and
        ``state``.

    Raises
    ------
    FileNotFoundError
        If the folder has no :data:`TRUTH_TSV`.
    """
    where = Path(out_dir) / TRUTH_TSV
    if not where.is_file():
        raise FileNotFoundError(f"{where}: no simulator truth for patient {patient!r}")
    table = read_image_truth(out_dir)
    return table.loc[table["patient"] == patient].set_index("instance_id")[["cell_type", "state"]]


def external_image_params(
    params: ImageSimParams,
    *,
    classes: Sequence[str] = ("healthy",),
    n_patients_per_class: int = 8,
    stain_shift: float = 1.0,
    seed_offset: int = 1000,
) -> ImageSimParams:
    """Parameters of an external cohort matching a target cohort.

    The external cohort shares the cell types, the class means, the disease-only types and
    state shifts of its classes and the patient-effect sds, but has its own patients
    (``seed + seed_offset``), a stain shift and ids ``E000``...

    Parameters
    ----------
    params
        The target cohort's parameters.
    classes
        Classes present in the external cohort (``healthy`` by default).
    n_patients_per_class
        Patients per class in the external cohort.
    stain_shift
        The external cohort's stain shift (see :class:`ImageSimParams`).
    seed_offset
        Added to ``params.seed``.

    Returns
    -------
    ImageSimParams
        With ``cohort="external"`` and ``patient_prefix="E"``.
    """
    return replace(
        params,
        classes=tuple(classes),
        n_patients_per_class=n_patients_per_class,
        disease_only=restrict_to_classes(params.disease_only or {}, classes),
        disease_only_morphology=restrict_to_classes(params.disease_only_morphology or {}, classes),
        state_shift=restrict_to_classes(params.state_shift or {}, classes),
        stain_shift=stain_shift,
        seed=params.seed + seed_offset,
        cohort="external",
        patient_prefix="E",
    )
