"""A cohort of precomputed bag files (the ``bags`` modality) with known instance types."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recipe_mil.io.bags import write_bag

DEFAULT_PROPORTIONS: dict[str, list[float]] = {
    "healthy": [0.45, 0.30, 0.15, 0.05, 0.05],
    "disease": [0.15, 0.15, 0.15, 0.45, 0.10],
}


def simulate_bag_cohort(
    out_dir: str | os.PathLike[str],
    *,
    class_proportions: Mapping[str, Sequence[float]] = DEFAULT_PROPORTIONS,
    n_per_class: int = 10,
    dim: int = 8,
    size_range: tuple[int, int] = (150, 300),
    concentration: float = 30.0,
    separation: float = 6.0,
    cohort: str = "target",
    prefix: str = "",
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Write one bag file per patient: instance types are Gaussian blobs, classes differ by mix.

    Every bag carries its instances' type as ``truth_cell_type`` (``type_{index}``).

    Parameters
    ----------
    out_dir
        Folder for the ``{patient}.h5`` files.
    class_proportions
        Class -> mean instance-type proportions (the truth a recipe should recover).
    n_per_class
        Patients per class.
    dim
        Embedding width.
    size_range
        Bag sizes are uniform in ``[low, high)``.
    concentration
        Patients' proportions ~ Dirichlet(concentration * class mean).
    separation
        Standard deviation of the blob centres (instances have unit noise).
    cohort
        Cohort written to the sheet.
    prefix
        Prefix of patient ids.
    seed
        Random seed; the blob centres depend on ``seed`` only.

    Returns
    -------
    sheet
        Columns ``patient, label, path, cohort``.
    types
        Patient -> instance-type index of each instance.
    """
    rng = np.random.default_rng(seed)
    k = len(next(iter(class_proportions.values())))
    centres = rng.normal(0, separation, size=(k, dim))
    out = Path(out_dir)
    rows, types = [], {}
    for cls, mean in class_proportions.items():
        for i in range(n_per_class):
            pid = f"{prefix}{cls}_{i:02d}"
            n = int(rng.integers(*size_range))
            t = rng.choice(k, size=n, p=rng.dirichlet(concentration * np.asarray(mean)))
            x = centres[t] + rng.normal(0, 1, size=(n, dim))
            path = out / f"{pid}.h5"
            write_bag(
                path,
                x,
                [f"{pid}_{j}" for j in range(n)],
                patient=pid,
                label=cls,
                encoder="gaussian-blobs",
                truth={"cell_type": [f"type_{i}" for i in t], "state": ["baseline"] * n},
            )
            rows.append((pid, cls, str(path), cohort))
            types[pid] = t
    return pd.DataFrame(rows, columns=["patient", "label", "path", "cohort"]), types
