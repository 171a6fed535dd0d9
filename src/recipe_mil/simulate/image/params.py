"""Cell types, state-shift directions and parameters of a simulated blood-smear cohort (docs/method.md §8)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recipe_mil.simulate.common import SimParams, lookup_class_means

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


@dataclass
class ImageSimParams(SimParams):
    """Parameters of a simulated blood-smear cohort.

    Those every simulator has are described in :class:`~recipe_mil.simulate.common.SimParams`: here the cell
    types are :data:`CELL_TYPES` (known class names ``healthy``, ``aml``, ``eosinophilia`` and ``low_blast``
    have built-in means, :data:`DEFAULT_CLASS_PROPORTIONS`), the instances are crops and
    ``state_shift_magnitude`` is the size of the shift per unit of :data:`STATE_SHIFT_DIRECTIONS` (0.5: a
    reactive lymphocyte's radius x e^0.5 = 1.65); ``seed`` also seeds the rendering.

    Attributes
    ----------
    disease_only_morphology
        Class -> the morphology of its disease-only type, one of
        :data:`DISEASE_ONLY_MORPHOLOGIES`. Classes not listed: ``aml`` abnormal promyelocytes,
        any other ``smudge_cell``.
    crops_per_patient_mean, crops_per_patient_sd
        Normal model of a patient's number of crops (rounded).
    min_crops_per_patient, max_crops_per_patient
        Crop numbers are clipped to this range.
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
    rbc_mean
        Mean number of red blood cells per crop (Poisson).
    noise_sd
        Sd of the pixel noise (intensity, 0-255 scale).
    image_format
        ``"png"``, ``"jpeg"`` or ``"tiff"``.
    """

    classes: tuple[str, ...] = ("healthy", "aml", "eosinophilia")
    concentration: float = 10.0
    state_shift_magnitude: float = 0.5
    n_patients_per_class: int = 10
    disease_only_morphology: dict[str, str] | None = None
    crops_per_patient_mean: float = 60
    crops_per_patient_sd: float = 20
    min_crops_per_patient: int = 20
    max_crops_per_patient: int = 120
    image_size: int = 96
    size_jitter: float = 0.08
    patient_size_sd: float = 0.03
    stain_jitter: float = 0.05
    patient_stain_sd: float = 0.05
    stain_shift: float = 0.0
    rbc_mean: float = 2.5
    noise_sd: float = 2.0
    image_format: str = "png"

    BUILTIN_DISEASE_ONLY = _DEFAULT_DISEASE_ONLY
    BUILTIN_STATE_SHIFT = _DEFAULT_STATE_SHIFT
    SHARED_CELL_TYPES = CELL_TYPES

    def _own_checks(self) -> dict[str, bool]:
        return {
            "crops_per_patient_mean": self.crops_per_patient_mean > 0,
            "crops_per_patient_sd": self.crops_per_patient_sd >= 0,
            "min_crops_per_patient": self.min_crops_per_patient >= 1,
            "max_crops_per_patient": self.max_crops_per_patient >= self.min_crops_per_patient,
            "image_size": self.image_size >= 48,
            "size_jitter": self.size_jitter >= 0,
            "patient_size_sd": self.patient_size_sd >= 0,
            "stain_jitter": self.stain_jitter >= 0,
            "patient_stain_sd": self.patient_stain_sd >= 0,
            "rbc_mean": self.rbc_mean >= 0,
            "noise_sd": self.noise_sd >= 0,
            "image_format": self.image_format in _FORMATS,
        }

    def __post_init__(self) -> None:
        super().__post_init__()
        given = dict(self.disease_only_morphology or {})
        bad_morph = {c: m for c, m in given.items() if m not in DISEASE_ONLY_MORPHOLOGIES}
        if bad_morph:
            raise ValueError(
                f"ImageSimParams: disease_only_morphology {bad_morph}: choose from {list(DISEASE_ONLY_MORPHOLOGIES)}"
            )
        self.disease_only_morphology = {
            c: given.get(c, _DEFAULT_DISEASE_ONLY_MORPHOLOGY.get(c, "smudge_cell")) for c in self.disease_only or {}
        }


_FORMATS = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg"), "tiff": ("TIFF", ".tif")}


def class_mean_proportions(params: ImageSimParams) -> dict[str, np.ndarray]:
    """Mean cell-type proportions of every class over :data:`CELL_TYPES` (the Dirichlet means).

    See :func:`~recipe_mil.simulate.common.lookup_class_means`; built in: :data:`DEFAULT_CLASS_PROPORTIONS`.
    """
    return lookup_class_means(params, DEFAULT_CLASS_PROPORTIONS)
