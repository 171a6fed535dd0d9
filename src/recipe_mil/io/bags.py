"""Per-patient bag files (docs/method.md §9).

A bag file is HDF5 with a dataset ``features`` (float32, n_instances x d), a dataset
``instance_ids`` (UTF-8 strings) and attributes ``patient``, ``label``, ``encoder`` and
``recipe_mil_version``. Bags of simulated data also hold the simulator's per-instance ground
truth as optional UTF-8 datasets ``truth_{name}`` (``truth_cell_type``, ``truth_state``), one
value per instance; bags of real data have none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from recipe_mil import __version__
from recipe_mil.io.atomic import atomic_path
from recipe_mil.io.tables import read_tsv, write_tsv

TRUTH_PREFIX = "truth_"
"""Prefix of the optional per-instance ground-truth datasets of a bag file."""


class BagFileError(ValueError):
    """A bag file is missing, unreadable or does not follow the bag contract."""


_DTYPE_KINDS = {"c": "complex", "S": "byte strings", "O": "strings or objects", "U": "strings", "b": "booleans"}
"""numpy dtype kinds a ``features`` dataset may not have, in words (real floats and integers are fine)."""


@dataclass
class Bag:
    """One patient's bag of instance embeddings.

    Attributes
    ----------
    features
        Float32 array of shape (n_instances, d).
    instance_ids
        One identifier per instance (file name, cell barcode or event index).
    patient
        Patient identifier.
    label
        Class label of the patient.
    encoder
        Name of the encoder that produced the features.
    attrs
        Any further attributes stored in the file.
    truth
        Simulated data only: name (``cell_type``, ``state``) -> one string per instance
        (object arrays); empty for real data.
    """

    features: np.ndarray
    instance_ids: np.ndarray
    patient: str
    label: str
    encoder: str = "unknown"
    attrs: dict[str, object] = field(default_factory=dict)
    truth: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_instances(self) -> int:
        """Number of instances in the bag."""
        return int(self.features.shape[0])


def write_bag(
    path: str | os.PathLike[str],
    features: np.ndarray,
    instance_ids: Sequence[str] | np.ndarray,
    *,
    patient: str,
    label: str,
    encoder: str,
    extra_attrs: dict[str, object] | None = None,
    truth: Mapping[str, Sequence[str] | np.ndarray] | None = None,
) -> None:
    """Write one bag file atomically.

    Parameters
    ----------
    path
        Destination ``.h5`` file.
    features
        Instance embeddings, shape (n_instances, d); stored as float32.
    instance_ids
        One string per instance.
    patient, label, encoder
        Stored as file attributes.
    extra_attrs
        Further attributes to store.
    truth
        Optional per-instance ground truth of simulated data: name -> one value per instance,
        stored as the UTF-8 dataset ``truth_{name}``.

    Raises
    ------
    BagFileError
        If the bag is empty, has non-finite values, mismatched ids or a truth of the wrong length.
    """
    feats = np.asarray(features, dtype=np.float32)
    ids = np.asarray([str(i) for i in instance_ids], dtype=object)
    if feats.ndim != 2:
        raise BagFileError(f"{path}: features must be 2-d (n_instances x d), got shape {feats.shape}")
    if feats.shape[0] == 0:
        raise BagFileError(f"{path}: patient {patient!r} has zero instances")
    if ids.shape[0] != feats.shape[0]:
        raise BagFileError(f"{path}: {feats.shape[0]} feature rows but {ids.shape[0]} instance ids")
    if not np.isfinite(feats).all():
        bad = int((~np.isfinite(feats)).any(axis=1).sum())
        raise BagFileError(f"{path}: patient {patient!r} has {bad} instances with NaN or Inf features")
    truths = {name: np.asarray([str(v) for v in values], dtype=object) for name, values in (truth or {}).items()}
    wrong = {name: len(v) for name, v in truths.items() if len(v) != feats.shape[0]}
    if wrong:
        raise BagFileError(f"{path}: {feats.shape[0]} instances but truth lengths {wrong}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("features", data=feats)
        f.create_dataset("instance_ids", data=ids, dtype=h5py.string_dtype("utf-8"))
        for name, values in truths.items():
            f.create_dataset(TRUTH_PREFIX + name, data=values, dtype=h5py.string_dtype("utf-8"))
        f.attrs["patient"] = str(patient)
        f.attrs["label"] = str(label)
        f.attrs["encoder"] = str(encoder)
        f.attrs["recipe_mil_version"] = __version__
        for key, value in (extra_attrs or {}).items():
            f.attrs[key] = value


def instance_truth(
    table: pd.DataFrame | None, instance_ids: Sequence[str] | np.ndarray, *, source: str = ""
) -> dict[str, np.ndarray] | None:
    """Pick the ground truth of a bag's instances from a simulator's per-instance truth table.

    Parameters
    ----------
    table
        Indexed by instance id (string), one column per truth (``cell_type``, ``state``);
        None for real data.
    instance_ids
        The bag's instance ids, in bag order.
    source
        Where the table came from, named in errors.

    Returns
    -------
    dict[str, numpy.ndarray] or None
        Column -> one string per instance (for :func:`write_bag`'s ``truth``); None without a table.

    Raises
    ------
    BagFileError
        If an instance has no row in the table.
    """
    if table is None:
        return None
    ids = [str(i) for i in instance_ids]
    index = table.index.astype(str)
    missing = pd.Index(ids).difference(index)
    if len(missing):
        raise BagFileError(
            f"{source or 'truth table'}: no truth for {len(missing)} instance(s), e.g. {list(missing[:3])}"
        )
    rows = table.set_axis(index).loc[ids]
    return {str(col): rows[col].astype(str).to_numpy(dtype=object) for col in table.columns}


def _attr_str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _open_bag(p: Path) -> h5py.File:
    """Open a bag file for reading; a missing file is a :class:`BagFileError` naming it."""
    if not p.is_file():
        raise BagFileError(f"{p}: bag file does not exist")
    return h5py.File(p, "r")


def _features_dataset(f: h5py.File, p: Path) -> h5py.Dataset:
    """Return the bag's 2-d ``features`` dataset (not read), or raise a :class:`BagFileError` naming the file."""
    if "features" not in f:
        raise BagFileError(f"{p}: no 'features' dataset (found: {sorted(f.keys())})")
    ds = f["features"]
    if not isinstance(ds, h5py.Dataset):
        found = sorted(ds.keys()) if isinstance(ds, h5py.Group) else type(ds).__name__
        raise BagFileError(f"{p}: 'features' is an HDF5 group (holding {found}), not a dataset")
    if ds.dtype.kind not in "fiu":
        raise BagFileError(
            f"{p}: 'features' has dtype {ds.dtype} ({_DTYPE_KINDS.get(ds.dtype.kind, 'not a number')}); "
            "bag features must be real numbers (float or integer)"
        )
    if ds.ndim != 2:
        raise BagFileError(f"{p}: 'features' must be 2-d, got shape {ds.shape}")
    return ds


def read_bag(path: str | os.PathLike[str], *, features: bool = True) -> Bag:
    """Read one bag file and check it against the bag contract.

    Parameters
    ----------
    path
        A ``.h5`` bag file (written by :func:`write_bag` or CLAM/DinoBloom style).
    features
        If False, only the metadata and ids are read (``features`` is then an
        empty (0, d) array).

    Returns
    -------
    Bag
        The bag. ``patient`` falls back to the file stem and ``label`` to ``""``
        when the attributes are absent (precomputed input bags).

    Raises
    ------
    BagFileError
        If the file is missing, unreadable, lacks ``features``, its ``features`` is not a 2-d
        dataset of real numbers, or holds non-finite values.
    """
    p = Path(path)
    try:
        with _open_bag(p) as f:
            ds = _features_dataset(f, p)
            feats = ds[()].astype(np.float32, copy=False) if features else np.empty((0, ds.shape[1]), np.float32)
            n = ds.shape[0]
            if "instance_ids" in f:
                ids = np.asarray([_attr_str(x) for x in f["instance_ids"][()]], dtype=object)
            else:
                ids = np.asarray([str(i) for i in range(n)], dtype=object)
            truth = {
                key.removeprefix(TRUTH_PREFIX): np.asarray([_attr_str(x) for x in f[key][()]], dtype=object)
                for key in f.keys()
                if key.startswith(TRUTH_PREFIX)
            }
            attrs = {k: f.attrs[k] for k in f.attrs}
    except OSError as exc:
        raise BagFileError(f"{p}: cannot read HDF5 file ({exc})") from exc
    if features and not np.isfinite(feats).all():
        bad = int((~np.isfinite(feats)).any(axis=1).sum())
        raise BagFileError(f"{p}: {bad} instances have NaN or Inf features")
    if len(ids) != n:
        raise BagFileError(f"{p}: {n} feature rows but {len(ids)} instance ids")
    wrong = {name: len(v) for name, v in truth.items() if len(v) != n}
    if wrong:
        raise BagFileError(f"{p}: {n} feature rows but truth lengths {wrong}")
    return Bag(
        features=feats,
        instance_ids=ids,
        patient=_attr_str(attrs.pop("patient", p.stem)),
        label=_attr_str(attrs.pop("label", "")),
        encoder=_attr_str(attrs.pop("encoder", "unknown")),
        attrs=attrs,
        truth=truth,
    )


def read_bag_features(path: str | os.PathLike[str]) -> np.ndarray:
    """Read only a bag file's ``features`` (float32), checked as :func:`read_bag` checks them.

    The cheap read of a bag used as the feature store: no instance ids or truth are decoded.

    Raises
    ------
    BagFileError
        If the file is missing, unreadable, its ``features`` is not a 2-d dataset of real
        numbers, or holds non-finite values.
    """
    p = Path(path)
    try:
        with _open_bag(p) as f:
            feats = _features_dataset(f, p)[()].astype(np.float32, copy=False)
    except OSError as exc:
        raise BagFileError(f"{p}: cannot read HDF5 file ({exc})") from exc
    if not np.isfinite(feats).all():
        bad = int((~np.isfinite(feats)).any(axis=1).sum())
        raise BagFileError(f"{p}: {bad} instances have NaN or Inf features")
    return feats


def bag_shape(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Return a bag file's ``features`` shape without reading the features.

    Parameters
    ----------
    path
        A ``.h5`` bag file.

    Returns
    -------
    tuple[int, int]
        (n_instances, embedding width).

    Raises
    ------
    BagFileError
        If the file is missing, is not HDF5, lacks ``features``, or ``features`` is not a 2-d
        dataset of real numbers (an HDF5 group, complex numbers or byte strings are refused).
    """
    p = Path(path)
    try:
        with _open_bag(p) as f:
            shape = _features_dataset(f, p).shape
    except OSError as exc:
        raise BagFileError(f"{p}: cannot read HDF5 file ({exc})") from exc
    return int(shape[0]), int(shape[1])


def read_bags(paths: Sequence[str | os.PathLike[str]]) -> tuple[np.ndarray, np.ndarray, list[Bag]]:
    """Read several bags into one feature matrix plus offsets.

    Parameters
    ----------
    paths
        Bag files, in the order wanted.

    Returns
    -------
    features
        Float32 array stacking all bags' instances.
    offsets
        Int64 array of length ``len(paths) + 1``; bag ``i`` is ``features[offsets[i]:offsets[i+1]]``.
    bags
        The bags' metadata (their ``features`` are views into the stacked array).

    Raises
    ------
    BagFileError
        If bags disagree on the embedding width.
    """
    shapes = [bag_shape(p) for p in paths]  # headers only: the matrix is allocated once, before any data is read
    by_width: dict[int, list[str]] = {}
    for p, (_, width) in zip(paths, shapes, strict=True):
        by_width.setdefault(width, []).append(str(p))
    if len(by_width) > 1:
        # name every file of the rarer widths, and a few of the common one (a dataset can have thousands)
        groups = sorted(by_width.items(), key=lambda kv: -len(kv[1]))
        detail = "; ".join(
            f"width {w}: {len(files)} bag(s) ({', '.join(files[:3])}{', ...' if len(files) > 3 else ''})"
            if i == 0
            else f"width {w}: {', '.join(files)}"
            for i, (w, files) in enumerate(groups)
        )
        raise BagFileError(f"bags have different embedding widths: {detail}")
    offsets = np.concatenate([[0], np.cumsum([n for n, _ in shapes])]).astype(np.int64)
    # one preallocated matrix filled bag by bag: peak memory is the pool plus one bag, not twice the pool
    features = np.empty((int(offsets[-1]), next(iter(by_width)) if shapes else 0), dtype=np.float32)
    bags = []
    for p, start, stop in zip(paths, offsets[:-1], offsets[1:], strict=True):
        bag = read_bag(p)
        if bag.n_instances != stop - start:
            raise BagFileError(f"{p}: changed while being read ({stop - start} then {bag.n_instances} instances)")
        features[start:stop] = bag.features
        bag.features = features[start:stop]
        bags.append(bag)
    return features, offsets, bags


def write_bag_index(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> pd.DataFrame:
    """Write a dataset's bag index: one row per bag file (``patient``, ``path``, ``n_instances``, ``n_features``).

    The bag files are the dataset's feature store; the index names them once, so that every fold job depends on
    one small file instead of every bag (with thousands of patients, a job listing every bag as an input costs the
    scheduler more than the job). Only the shapes are read.

    Parameters
    ----------
    paths
        The bag files; each file's stem is its patient.
    out
        The index (TSV), written atomically.

    Returns
    -------
    pandas.DataFrame
        The index.
    """
    rows = []
    for p in paths:
        n, d = bag_shape(p)
        rows.append({"patient": Path(p).stem, "path": str(p), "n_instances": n, "n_features": d})
    index = pd.DataFrame(rows, columns=["patient", "path", "n_instances", "n_features"])
    write_tsv(index, out)
    return index


def read_bag_index(path: str | os.PathLike[str]) -> dict[str, str]:
    """Patient -> bag file, from an index written by :func:`write_bag_index`."""
    index = read_tsv(path)  # ids verbatim: a patient called NA stays "NA"
    return dict(zip(index["patient"], index["path"], strict=True))
