"""Per-patient bag files (docs/method.md §9).

A bag file is HDF5 with a dataset ``features`` (float32, n_instances x d), a dataset
``instance_ids`` (UTF-8 strings) and attributes ``patient``, ``label``, ``encoder`` and
``recipe_mil_version``. Bags of simulated patients may add ``truth_cell_type`` (UTF-8
strings, one per instance: the simulated cell type or state), which checks such as the
clusters' agreement with the truth read; real data has none. See ``docs/method.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from recipe_mil import __version__
from recipe_mil.io.atomic import atomic_path

TRUTH_DATASET = "truth_cell_type"


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
        Simulated data only: each instance's true cell type (``truth_cell_type``), else None.
    """

    features: np.ndarray
    instance_ids: np.ndarray
    patient: str
    label: str
    encoder: str = "unknown"
    attrs: dict[str, object] = field(default_factory=dict)
    truth: np.ndarray | None = None

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
    truth: Sequence[str] | np.ndarray | None = None,
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
        Simulated data: each instance's true cell type, stored as ``truth_cell_type``.

    Raises
    ------
    BagFileError
        If the bag is empty, has non-finite values or mismatched ids.
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
    if truth is not None and len(truth) != feats.shape[0]:
        raise BagFileError(f"{path}: {feats.shape[0]} feature rows but {len(truth)} truth labels")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("features", data=feats)
        f.create_dataset("instance_ids", data=ids, dtype=h5py.string_dtype("utf-8"))
        if truth is not None:
            f.create_dataset(
                TRUTH_DATASET, data=np.asarray([str(t) for t in truth], dtype=object), dtype=h5py.string_dtype("utf-8")
            )
        f.attrs["patient"] = str(patient)
        f.attrs["label"] = str(label)
        f.attrs["encoder"] = str(encoder)
        f.attrs["recipe_mil_version"] = __version__
        for key, value in (extra_attrs or {}).items():
            f.attrs[key] = value


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
            truth = np.asarray(f[TRUTH_DATASET].asstr()[()], dtype=object) if TRUTH_DATASET in f else None
            attrs = {k: f.attrs[k] for k in f.attrs}
    except OSError as exc:
        raise BagFileError(f"{p}: cannot read HDF5 file ({exc})") from exc
    if features and not np.isfinite(feats).all():
        bad = int((~np.isfinite(feats)).any(axis=1).sum())
        raise BagFileError(f"{p}: {bad} instances have NaN or Inf features")
    if len(ids) != n:
        raise BagFileError(f"{p}: {n} feature rows but {len(ids)} instance ids")
    return Bag(
        features=feats,
        instance_ids=ids,
        patient=_attr_str(attrs.pop("patient", p.stem)),
        label=_attr_str(attrs.pop("label", "")),
        encoder=_attr_str(attrs.pop("encoder", "unknown")),
        attrs=attrs,
        truth=truth if truth is not None and len(truth) == n else None,
    )


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
