"""Attention files (``attention.npz``): every test instance's attention weight, compactly.

A bag's attention covers every instance of the bag, in the bag file's row order, so the file needs no instance ids:
it holds the patients, the number of instances of each and one flat float32 array of the weights (bag after bag).
:func:`read_attention` turns it back into the table ``patient, row, attention`` and, given the bag files, adds the
instance ids. A per-instance TSV held a patient id and an instance id per row (28 bytes a row against 4 here).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping

import numpy as np
import pandas as pd

from recipe_mil.io.atomic import atomic_path

ATTENTION_ARRAYS = ("patient", "n_instances", "attention")
"""The arrays of an attention file: patient ids, instances per patient, the weights (float32, bag after bag)."""


def write_attention(path: str | os.PathLike[str], table: pd.DataFrame) -> None:
    """Write an attention table atomically as ``.npz`` (deflate-compressed, the same table gives the same bytes).

    Parameters
    ----------
    path
        Destination file.
    table
        ``patient, attention`` with the rows of each patient together and in bag order (other columns, such as
        ``instance_id``, are dropped: :func:`read_attention` recovers them from the bags).
    """
    patients = table["patient"].astype(str).to_numpy()
    starts = np.flatnonzero(np.r_[True, patients[1:] != patients[:-1]]) if len(patients) else np.array([], int)
    counts = np.diff(np.r_[starts, len(patients)])
    order = patients[starts]
    if len(set(order)) != len(order):
        raise ValueError("the attention rows of each patient must be together (one run per patient)")
    arrays = {
        "patient": order.astype(str),
        "n_instances": counts.astype(np.int32),
        "attention": table["attention"].to_numpy(np.float32),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in ATTENTION_ARRAYS:
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))  # fixed: the same bytes
            z.writestr(info, member.getvalue(), zipfile.ZIP_DEFLATED)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def read_attention(path: str | os.PathLike[str], bag_paths: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Read an attention file: one row per instance, ``patient, row, attention`` (+ ``instance_id``).

    Parameters
    ----------
    path
        A file written by :func:`write_attention`.
    bag_paths
        Patient -> bag file; when given, the column ``instance_id`` is read from the bags (``row`` indexes them).

    Returns
    -------
    pandas.DataFrame
        ``row`` is the instance's row in its bag file (int32); a bag's attention sums to 1.
    """
    with np.load(path, allow_pickle=False) as f:
        patients, counts, weights = (f[name] for name in ATTENTION_ARRAYS)
    rows = np.arange(counts.sum(), dtype=np.int32) - np.repeat(np.cumsum(counts) - counts, counts).astype(np.int32)
    table = pd.DataFrame({"patient": np.repeat(patients.astype(object), counts), "row": rows, "attention": weights})
    if bag_paths is not None:
        from recipe_mil.io.bags import read_bag  # noqa: PLC0415 - only for instance ids

        ids = [read_bag(bag_paths[str(p)], features=False).instance_ids for p in patients]
        for p, n, i in zip(patients, counts, ids, strict=True):
            if len(i) != n:
                raise ValueError(f"{path}: {n} attention weights for patient {p}, whose bag has {len(i)} instances")
        table["instance_id"] = np.concatenate(ids).astype(object) if ids else np.array([], dtype=object)
    return table
