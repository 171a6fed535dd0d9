"""Materialised synthetic patients: one bag file per synthetic patient plus a sample sheet (docs/method.md §9).

The study stores synthetic patients index-based (rows of a fold's pool, :mod:`recipe_mil.io.synthetic`).
To take them away, :func:`write_synthetic_bags` writes every synthetic bag as a bag file with a
``features`` dataset (float32, n_instances x d: the layout CLAM/TRIDENT-style MIL code reads), and a
sample sheet with the bag's label, method, recipe class and provenance: the source patient of every
instance (in the bag's ``instance_ids``, ``{patient}:{instance id}``) and, per bag in the sheet, the
patients its instances came from.

The pool's feature matrix is an argument (:func:`synthetic_bag_features`), not read here, so the
writer works whether the caller took it from ``pool.h5ad`` or gathered it from the bag files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recipe_mil.io.bags import write_bag
from recipe_mil.io.tables import write_tsv
from recipe_mil.recipes.generate import SyntheticSet

SHEET_COLUMNS = (
    "patient",
    "label",
    "path",
    "method",
    "source_class",
    "instances",
    "n_instances",
    "n_source_patients",
    "source_patients",
)
"""Columns of an export's ``samples.tsv`` (``path`` is relative to the sheet's folder)."""

SYNTHESISED = "synthesised"
"""Source patient of an instance that is no real instance (a ReMix prototype)."""


def synthetic_bag_features(syn: SyntheticSet, i: int, pool_features: np.ndarray) -> np.ndarray:
    """Return the instance features of synthetic bag ``i`` (float32, n_instances x d).

    Parameters
    ----------
    syn
        Index-based synthetic patients.
    i
        The bag.
    pool_features
        The pool's feature matrix (row ``j`` is pool row ``j``); ignored for a set with its own
        ``features`` (ReMix prototypes), whose rows the indices then point to.

    Returns
    -------
    numpy.ndarray
        The bag's rows, in the bag's order.
    """
    source = syn.features if syn.features is not None else pool_features
    return np.asarray(source[syn.bag(i)], dtype=np.float32)


def write_synthetic_bags(
    out_dir: str | os.PathLike[str],
    syn: SyntheticSet,
    pool_features: np.ndarray,
    pool_obs: pd.DataFrame,
    instance_ids: np.ndarray,
    *,
    method: str,
    encoder: str = "unknown",
    classes: Sequence[str] | None = None,
    prefix: str = "synthetic",
    sheet_name: str = "samples.tsv",
) -> pd.DataFrame:
    """Write each synthetic patient as a bag file under ``out_dir/bags`` and a sample sheet ``out_dir/sheet_name``.

    Bag ``i`` is ``bags/{prefix}_{i:04d}.h5`` (:func:`recipe_mil.io.bags.write_bag`): ``features``
    (float32, n_instances x d), ``instance_ids`` (``{source patient}:{its instance id}`` for a real
    instance, ``synthesised:{row}`` for a ReMix prototype), the pool's per-instance simulated truth
    where it has one, and attributes ``patient``, ``label``, ``encoder``, ``method``, ``source_class``
    (the class whose recipe made the bag) and, for soft-labelled bags (PseMix), ``soft_target`` with
    ``classes``.

    Parameters
    ----------
    out_dir
        Destination folder (created).
    syn
        Index-based synthetic patients.
    pool_features
        The pool's feature matrix (see :func:`synthetic_bag_features`).
    pool_obs
        The pool's ``obs``: ``patient`` and optional ``truth_*`` columns, one row per pool row.
    instance_ids
        Each pool row's instance id in its patient's bag (:func:`recipe_mil.recipes.pool.pool_instance_ids`).
    method
        The method or generator that made the bags (sheet column, bag attribute).
    encoder
        Encoder of the features (bag attribute).
    classes
        Class order of the soft targets (stored with them).
    prefix
        Synthetic patient ids are ``{prefix}_{i:04d}``.
    sheet_name
        File name of the sample sheet.

    Returns
    -------
    pandas.DataFrame
        The sheet (:data:`SHEET_COLUMNS`): ``instances`` is ``real`` (rows of real bags) or
        ``synthesised``; ``source_patients`` lists the distinct source patients, comma-separated.
    """
    out = Path(out_dir)
    (out / "bags").mkdir(parents=True, exist_ok=True)
    own = syn.features is not None
    sources = pool_obs["patient"].astype(str).to_numpy()
    names = np.char.add(np.char.add(sources.astype(str), ":"), np.asarray(instance_ids, dtype=str))
    truth_cols = [] if own else [c for c in pool_obs.columns if str(c).startswith("truth_")]
    rows = []
    for i in range(len(syn)):
        idx = syn.bag(i)
        patient = f"{prefix}_{i:04d}"
        path = Path("bags") / f"{patient}.h5"
        attrs: dict[str, object] = {"method": method, "source_class": str(syn.source_class[i]), "synthetic": True}
        if syn.soft_targets is not None:
            attrs["soft_target"] = np.asarray(syn.soft_targets[i], dtype=np.float64)
            if classes is not None:
                attrs["classes"] = [str(c) for c in classes]
        write_bag(
            out / path,
            synthetic_bag_features(syn, i, pool_features),
            [f"{SYNTHESISED}:{j}" for j in idx] if own else names[idx],
            patient=patient,
            label=str(syn.label[i]),
            encoder=encoder,
            extra_attrs=attrs,
            truth={c.removeprefix("truth_"): pool_obs[c].astype(str).to_numpy()[idx] for c in truth_cols} or None,
        )
        src = [] if own else sorted(set(sources[idx]))
        rows.append(
            (
                patient,
                str(syn.label[i]),
                path.as_posix(),
                method,
                str(syn.source_class[i]),
                SYNTHESISED if own else "real",
                len(idx),
                len(src),
                ",".join(src),
            )
        )
    sheet = pd.DataFrame(rows, columns=list(SHEET_COLUMNS))
    write_tsv(sheet, out / sheet_name)
    return sheet
