"""A simulated blood-smear cohort: per-patient crop folders plus the ground truth."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from recipe_mil.io.atomic import atomic_path, write_text_atomic
from recipe_mil.io.tables import write_tsv
from recipe_mil.seeds import derive_seed
from recipe_mil.simulate.common import (
    STATES,
    cohort_design,
    draw_bag_size,
    draw_instances,
    external_cohort_params,
    state_truth,
)
from recipe_mil.simulate.image.params import (
    _FORMATS,
    CELL_TYPES,
    STATE_SHIFT_DIRECTIONS,
    TRUTH_JSON,
    TRUTH_TSV,
    ImageSimParams,
    class_mean_proportions,
)
from recipe_mil.simulate.image.render import _patient_look, _render_cell


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
    states = params.cell_states(class_mean_proportions(params))
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
    states = params.cell_states(class_mean_proportions(params))
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
    write_tsv(
        pd.DataFrame(rows, columns=["patient", "label", "cohort", "instance_id", "cell_type", "state"]), out / TRUTH_TSV
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


def external_image_params(
    params: ImageSimParams,
    *,
    classes: Sequence[str] = ("healthy",),
    n_patients_per_class: int = 8,
    stain_shift: float = 1.0,
    seed_offset: int = 1000,
) -> ImageSimParams:
    """Parameters of an external cohort stained differently (see :func:`external_cohort_params`).

    ``stain_shift`` is its stain shift (see :class:`ImageSimParams`); by default it has ``healthy`` patients only.
    Patient ids ``E000``...
    """
    return external_cohort_params(
        params,
        classes,
        n_patients_per_class,
        seed_offset=seed_offset,
        patient_prefix="E",
        per_class=("disease_only", "disease_only_morphology", "state_shift"),
        stain_shift=stain_shift,
    )
