"""A simulated scRNA-seq dataset as the workflow uses it: target + external cohort + sheet."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import pandas as pd

from recipe_mil.io.atomic import atomic_path
from recipe_mil.simulate.scrna import (
    ScrnaSimParams,
    cohort_design,
    external_params,
    simulate_scrna_cohort,
    write_h5ad_atomic,
)


def sim_params_from_config(
    sim: Mapping[str, object], classes: Sequence[str]
) -> tuple[ScrnaSimParams, ScrnaSimParams | None]:
    """Build simulator parameters from a dataset's ``simulate`` config block.

    Parameters
    ----------
    sim
        The block: simulator keys plus an optional ``external`` sub-block
        (``classes``, ``n_patients_per_class``, ``batch_shift``).
    classes
        The dataset's classes.

    Returns
    -------
    tuple
        Target-cohort parameters and external-cohort parameters (None without ``external``).
    """
    target = ScrnaSimParams(classes=tuple(classes), **{k: v for k, v in sim.items() if k != "external"})
    ext = sim.get("external")
    if not ext:
        return target, None
    return target, external_params(
        target,
        classes=tuple(ext["classes"]),
        n_patients_per_class=int(ext["n_patients_per_class"]),
        batch_shift=float(ext["batch_shift"]),
    )


def simulated_sheet(target: ScrnaSimParams, external: ScrnaSimParams | None) -> pd.DataFrame:
    """Build the sample sheet of a simulated dataset from the design alone (no counts simulated)."""
    parts = [cohort_design(target)] + ([cohort_design(external)] if external else [])
    sheet = pd.concat(parts, ignore_index=True)
    sheet["path"] = sheet["patient"]
    return sheet[["patient", "label", "path", "cohort"]]


def simulate_dataset(
    sim: Mapping[str, object],
    *,
    classes: Sequence[str],
    target_path: str | os.PathLike[str],
    external_path: str | os.PathLike[str],
    sheet_path: str | os.PathLike[str],
) -> None:
    """Simulate and write the target cohort, the external cohort (possibly empty) and the sheet.

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
    target, external = sim_params_from_config(sim, classes)
    adata = simulate_scrna_cohort(target)
    write_h5ad_atomic(adata, target_path)
    ext = simulate_scrna_cohort(external) if external else adata[:0].copy()
    write_h5ad_atomic(ext, external_path)
    with atomic_path(sheet_path) as tmp:
        simulated_sheet(target, external).to_csv(tmp, sep="\t", index=False)
