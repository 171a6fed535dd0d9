"""Reading an ``.h5ad`` file's patient ids without loading it (cheap: sample-sheet checks at planning time).

Kept apart from :mod:`recipe_mil.embed.scrna` so that checking a sheet does not import scanpy.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

__all__ = ["h5ad_patients"]


def _as_str_values(values: object) -> pd.Series:
    """Values of an obs column as strings, missing values kept as NaN."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8")
    s = pd.Series(values)
    if s.dtype == object:
        s = s.map(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v)
    return s.astype("string").astype(object).where(s.notna())


def h5ad_patients(path: str | os.PathLike[str], patient_key: str) -> list[str]:
    """Return the distinct patient ids in an ``.h5ad`` file, read without loading the matrix.

    Parameters
    ----------
    path
        An ``.h5ad`` file.
    patient_key
        The ``obs`` column holding the patient id (categorical or string encodings of
        any anndata version).

    Returns
    -------
    list[str]
        Patient ids in order of first appearance; missing values are skipped.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file has no ``obs`` column ``patient_key`` or cannot be read as ``.h5ad``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: h5ad file does not exist")
    try:
        with h5py.File(p, "r") as f:
            if "obs" not in f:
                raise ValueError(f"{p}: no 'obs' group, not an .h5ad file")
            obs = f["obs"]
            if patient_key not in obs or patient_key in ("__categories", "_index"):
                order = obs.attrs.get("column-order", [k for k in obs.keys() if k not in ("__categories", "_index")])
                columns = [c.decode() if isinstance(c, bytes) else str(c) for c in np.atleast_1d(order)]
                raise ValueError(f"{p}: obs has no column {patient_key!r} (columns: {columns})")
            node = obs[patient_key]
            if "encoding-type" in node.attrs:
                values = _read_elem(node)
            elif "__categories" in obs and patient_key in obs["__categories"]:  # anndata < 0.8
                categories = np.asarray(obs["__categories"][patient_key][()])
                codes = np.asarray(node[()])
                values = pd.Categorical.from_codes(codes, categories=_as_str_values(categories).to_numpy())
            else:
                values = node[()]
    except OSError as exc:
        raise ValueError(f"{p}: cannot read HDF5 file ({exc})") from exc
    if isinstance(values, pd.Categorical):
        values = np.asarray(values.astype(object))
    series = _as_str_values(np.asarray(values))
    return [str(v) for v in pd.unique(series.dropna())]


def _read_elem(node: h5py.Group | h5py.Dataset) -> object:
    try:  # anndata >= 0.11
        from anndata.io import read_elem
    except ImportError:  # pragma: no cover - anndata 0.10
        from anndata.experimental import read_elem
    return read_elem(node)
