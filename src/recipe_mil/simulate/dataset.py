"""Simulated datasets as the workflow uses them: target + external cohort + sample sheet, per modality."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from recipe_mil.io.tables import write_tsv
from recipe_mil.modalities import MODALITIES, TRUTH_COLUMNS, Simulator, get_modality, simulated_modalities

__all__ = [
    "TRUTH_COLUMNS",
    "raw_location",
    "sim_params_from_config",
    "simulate_dataset",
    "simulate_file_dataset",
    "simulated_sheet",
    "simulator_keys",
]


def _simulator(modality: str) -> tuple[Simulator, Any, Any, Any]:
    """Return a modality's simulator (:mod:`recipe_mil.modalities`), module, parameter class, external function."""
    sim = get_modality(modality).simulator if modality in MODALITIES else None
    if sim is None:
        raise ValueError(f"no simulator for modality {modality!r}; choose one of {sorted(simulated_modalities())}")
    module = importlib.import_module(sim.module)
    return sim, module, getattr(module, sim.params), getattr(module, sim.external)


def simulator_keys(modality: str) -> tuple[frozenset[str], frozenset[str]]:
    """Return the keys a dataset's ``simulate`` block may hold for a modality.

    Parameters
    ----------
    modality
        ``scrna``, ``flow`` or ``image``.

    Returns
    -------
    tuple[frozenset[str], frozenset[str]]
        The simulator's parameters (its dataclass fields but ``classes``, which come from the dataset, plus
        ``external``) and the keys of the ``external`` sub-block (the external-cohort function's keyword
        arguments).

    Raises
    ------
    ValueError
        If the modality has no simulator.
    """
    _, _, params_cls, external_fn = _simulator(modality)
    target = {f.name for f in dataclasses.fields(params_cls) if f.init and f.name != "classes"} | {"external"}
    external = list(inspect.signature(external_fn).parameters)[1:]  # the first is the target's parameters
    return frozenset(target), frozenset(external)


def sim_params_from_config(sim: Mapping[str, Any], classes: Sequence[str], modality: str = "scrna") -> tuple[Any, Any]:
    """Build simulator parameters from a dataset's ``simulate`` config block.

    Parameters
    ----------
    sim
        The block: the modality simulator's parameters plus an optional ``external``
        sub-block passed to its external-cohort function (``classes``,
        ``n_patients_per_class`` and the modality's shift: ``batch_shift``,
        ``intensity_shift_sd``/``instrument`` or ``stain_shift``).
    classes
        The dataset's classes.
    modality
        ``scrna``, ``flow`` or ``image``.

    Returns
    -------
    tuple
        Target-cohort parameters and external-cohort parameters (None without ``external``).
    """
    _, _, params_cls, external_fn = _simulator(modality)
    target = params_cls(classes=tuple(classes), **{k: v for k, v in sim.items() if k != "external"})
    ext = sim.get("external")
    if not ext:
        return target, None
    ext = {k: (tuple(v) if isinstance(v, list) else v) for k, v in ext.items()}
    return target, external_fn(target, **ext)


def raw_location(raw_dir: str | os.PathLike[str], modality: str, cohort: str, patient: str) -> str:
    """Where the simulator writes a patient's raw data (the sheet's ``path``).

    ``raw_dir/{cohort}/{patient}{suffix}`` for a modality with a file or folder per patient, the
    patient's id in its cohort's ``.h5ad`` otherwise.
    """
    spec = get_modality(modality)
    if not spec.path_names_file:
        return patient
    suffix = spec.simulator.suffix if spec.simulator is not None else ""
    return str(Path(raw_dir) / cohort / f"{patient}{suffix}")


def simulated_sheet(
    target: Any, external: Any | None, *, modality: str = "scrna", raw_dir: str | os.PathLike[str] = ""
) -> pd.DataFrame:
    """Build the sample sheet of a simulated dataset from the design alone (nothing simulated)."""
    _, module, _, _ = _simulator(modality)
    parts = [module.cohort_design(target)] + ([module.cohort_design(external)] if external else [])
    sheet = pd.concat(parts, ignore_index=True)
    sheet["path"] = [
        raw_location(raw_dir, modality, c, p) for c, p in zip(sheet["cohort"], sheet["patient"], strict=True)
    ]
    return sheet[["patient", "label", "path", "cohort"]]


def simulate_dataset(
    sim: Mapping[str, Any],
    *,
    classes: Sequence[str],
    target_path: str | os.PathLike[str],
    external_path: str | os.PathLike[str],
    sheet_path: str | os.PathLike[str],
) -> None:
    """Simulate and write an scRNA-seq target cohort, external cohort (possibly empty) and sheet.

    Parameters
    ----------
    sim, classes
        As for :func:`sim_params_from_config`.
    target_path, external_path
        ``.h5ad`` destinations. Without an external block, an external file with the
        target's genes and no cells is written, so the workflow's outputs are always there.
    sheet_path
        TSV destination of the sample sheet.
    """
    _, module, _, _ = _simulator("scrna")
    target, external = sim_params_from_config(sim, classes, "scrna")
    adata = module.simulate_scrna_cohort(target)
    module.write_h5ad_atomic(adata, target_path)
    ext = module.simulate_scrna_cohort(external) if external else adata[:0].copy()
    module.write_h5ad_atomic(ext, external_path)
    write_tsv(simulated_sheet(target, external), sheet_path)


def simulate_file_dataset(
    sim: Mapping[str, Any],
    *,
    modality: str,
    classes: Sequence[str],
    raw_dir: str | os.PathLike[str],
    sheet_path: str | os.PathLike[str],
) -> pd.DataFrame:
    """Simulate a flow (one FCS per patient) or image (one crop folder per patient) dataset.

    Files go to ``raw_dir/target/`` and ``raw_dir/external/``; the sheet's paths point to them
    and equal those of :func:`simulated_sheet`.

    Returns
    -------
    pandas.DataFrame
        The sample sheet (also written to ``sheet_path``).
    """
    simulator, module, _, _ = _simulator(modality)
    if simulator.cohort is None:
        raise ValueError(f"modality {modality!r} is simulated as .h5ad cohorts, not files (simulate_dataset)")
    run = getattr(module, simulator.cohort)
    target, external = sim_params_from_config(sim, classes, modality)
    parts = [run(target, Path(raw_dir) / "target")]
    if external:
        parts.append(run(external, Path(raw_dir) / "external"))
    else:
        (Path(raw_dir) / "external").mkdir(parents=True, exist_ok=True)
    sheet = pd.concat(parts, ignore_index=True)[["patient", "label", "path", "cohort"]]
    expected = simulated_sheet(target, external, modality=modality, raw_dir=raw_dir)
    if list(map(str, sheet["path"])) != list(expected["path"]):
        raise RuntimeError("simulator wrote files where the sheet does not expect them")
    write_tsv(sheet, sheet_path)
    return sheet
