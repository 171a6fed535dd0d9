"""Per-patient bag files (docs/method.md §9).

A bag file is HDF5 with a dataset ``features`` (float32, n_instances x d), a dataset
``instance_ids`` (UTF-8 strings) and attributes ``patient``, ``label``, ``encoder`` and
``recipe_mil_version``. Bags of simulated data also hold the simulator's per-instance ground
truth as optional UTF-8 datasets ``truth_{name}`` (``truth_cell_type``, ``truth_state``), one
value per instance; bags of real data have none.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
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


IN_MEMORY_LIMIT_BYTES = 1 << 30
"""Bag features above this size (float32 bytes) are read on demand (:class:`BagStore`), not into memory."""


@dataclass(frozen=True)
class _FileLayout:
    """Where a bag file's ``features`` rows are: shape, stored dtype and, for a contiguous dataset, its byte offset."""

    n: int
    d: int
    dtype: np.dtype
    offset: int | None


def _layout(path: str) -> _FileLayout:
    p = Path(path)
    try:
        with _open_bag(p) as f:
            ds = _features_dataset(f, p)
            contiguous = ds.chunks is None and ds.compression is None and not ds.external and not ds.is_virtual
            offset = ds.id.get_offset() if contiguous else None
            return _FileLayout(int(ds.shape[0]), int(ds.shape[1]), np.dtype(ds.dtype), offset)
    except OSError as exc:
        raise BagFileError(f"{p}: cannot read HDF5 file ({exc})") from exc


class BagStore:
    """Rows of bag files addressed as one float32 matrix of shape (n_rows, d), read on demand.

    Row ``i`` of the store is row ``local[i]`` of file ``paths[file[i]]``. :meth:`take` reads only
    the rows asked for (a run of nearby rows of one file in one read), so the bag files are the
    feature store and nothing of the size of the cohort is held in memory. A contiguous ``features``
    dataset (as :func:`write_bag` writes it) is read with ``os.pread`` at its byte offset; a chunked or
    compressed one through h5py. At most ``max_open`` files are open at a time (least recently used
    closed first).

    Parameters
    ----------
    paths
        The bag files.
    file
        Per store row, the index of its file in ``paths``.
    local
        Per store row, its row in that file.
    transform
        Optional map applied to the rows flagged in ``transformed`` (the pool's alignment of
        external-cohort rows), as a function of a float32 block returning one of the same shape.
    transformed
        Per store row, whether ``transform`` applies (default: none).
    max_open
        Open file handles kept.

    Raises
    ------
    BagFileError
        If a file is not a bag, the files disagree on the width, or a row lies outside its file.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        file: np.ndarray,
        local: np.ndarray,
        *,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        transformed: np.ndarray | None = None,
        max_open: int = 256,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self._layouts = [_layout(p) for p in self.paths]
        widths = {lay.d for lay in self._layouts}
        if len(widths) > 1:
            read_bags(self.paths)  # raises the error that names the files of each width
        self._file = np.asarray(file, dtype=np.int32).reshape(-1)
        self._local = np.asarray(local, dtype=np.int64).reshape(-1)
        if self._file.shape != self._local.shape:
            raise ValueError("file and local must have one entry per store row")
        if self._file.size:
            sizes = np.array([lay.n for lay in self._layouts], dtype=np.int64)
            if self._file.min() < 0 or self._file.max() >= len(self.paths):
                raise ValueError("file indexes outside the list of paths")
            if self._local.min() < 0 or (self._local >= sizes[self._file]).any():
                bad = int(self._file[np.flatnonzero(self._local >= sizes[self._file])[0]])
                raise BagFileError(f"{self.paths[bad]}: the store asks for rows the bag does not hold")
        self.shape = (int(self._file.size), widths.pop() if widths else 0)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2
        self._transform = transform
        self._transformed = None if transformed is None else np.asarray(transformed, dtype=bool).reshape(-1)
        self._max_open = max(int(max_open), 1)
        self._open: OrderedDict[int, int | h5py.File] = OrderedDict()

    @classmethod
    def from_bags(cls, paths: Sequence[str | os.PathLike[str]], **kwargs: object) -> tuple[BagStore, np.ndarray]:
        """Stack the bags one after the other, as :func:`read_bags` does; also return the offsets."""
        sizes = [_layout(str(p)).n for p in paths]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        file = np.repeat(np.arange(len(paths), dtype=np.int32), sizes)
        local = np.concatenate([np.arange(n, dtype=np.int64) for n in sizes]) if sizes else np.zeros(0, np.int64)
        return cls(paths, file, local, **kwargs), offsets  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_open": OrderedDict()}  # handles are not copied

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close every open file."""
        for handle in getattr(self, "_open", {}).values():
            if isinstance(handle, int):
                os.close(handle)
            else:
                handle.close()
        if hasattr(self, "_open"):
            self._open.clear()

    def _handle(self, fi: int) -> int | h5py.File:
        handle = self._open.pop(fi, None)
        if handle is None:
            path = self.paths[fi]
            try:
                handle = os.open(path, os.O_RDONLY) if self._layouts[fi].offset is not None else h5py.File(path, "r")
            except OSError as exc:
                raise BagFileError(f"{path}: cannot read bag file ({exc})") from exc
            while len(self._open) >= self._max_open:
                old = self._open.popitem(last=False)[1]
                if isinstance(old, int):
                    os.close(old)
                else:
                    old.close()
        self._open[fi] = handle
        return handle

    def _read_span(self, fi: int, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of file ``fi`` as float32."""
        lay = self._layouts[fi]
        handle = self._handle(fi)
        if isinstance(handle, int):
            row_bytes = lay.d * lay.dtype.itemsize
            buf = os.pread(handle, (stop - start) * row_bytes, lay.offset + start * row_bytes)  # type: ignore[operator]
            block = np.frombuffer(buf, dtype=lay.dtype).reshape(stop - start, lay.d)
        else:
            block = _features_dataset(handle, Path(self.paths[fi]))[start:stop]
        return block.astype(np.float32, copy=False)

    def take(self, rows: np.ndarray, *, gap: int = 8) -> np.ndarray:
        """Return store rows ``rows`` (any order, repeats allowed) as a new float32 array of shape (len(rows), d).

        The distinct rows are read file by file in row order; rows of one file fewer than ``gap``
        apart are read in one piece.

        Raises
        ------
        BagFileError
            If a row read holds NaN or Inf.
        """
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        keys = (self._file[idx].astype(np.int64) << 32) | self._local[idx]
        uniq, inverse = np.unique(keys, return_inverse=True)
        ufile, urow = uniq >> 32, uniq & 0xFFFFFFFF
        block = np.empty((uniq.size, self.shape[1]), dtype=np.float32)
        starts = np.flatnonzero(np.r_[True, (np.diff(ufile) != 0) | (np.diff(urow) > gap)])
        stops = np.r_[starts[1:], uniq.size]
        files, lows, highs = ufile[starts].tolist(), urow[starts].tolist(), (urow[stops - 1] + 1).tolist()
        for a, b, fi, lo, hi in zip(starts.tolist(), stops.tolist(), files, lows, highs, strict=True):
            span = self._read_span(fi, lo, hi)
            block[a:b] = span if b - a == hi - lo else span[urow[a:b] - lo]
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            raise BagFileError(f"{self.paths[int(ufile[np.argmax(bad)])]}: instances with NaN or Inf features")
        out = block[inverse.reshape(-1)]
        if self._transform is not None and self._transformed is not None:
            flagged = self._transformed[idx]
            if flagged.any():
                out[flagged] = self._transform(out[flagged])
        return out

    def __getitem__(self, rows: np.ndarray | slice) -> np.ndarray:
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(self.shape[0]))
        return self.take(np.asarray(rows))

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """Return the whole matrix in memory (what the store exists to avoid; for small stores and checks)."""
        full = self.take(np.arange(self.shape[0]))
        return full if dtype is None else full.astype(dtype, copy=False)


def fits_in_memory(paths: Sequence[str | os.PathLike[str]]) -> bool:
    """Whether the bags' features, stacked as float32, stay within :data:`IN_MEMORY_LIMIT_BYTES` (headers only)."""
    return sum(n * d * 4 for n, d in (bag_shape(p) for p in paths)) <= IN_MEMORY_LIMIT_BYTES


def bag_features(
    paths: Sequence[str | os.PathLike[str]], *, in_memory: bool | None = None
) -> tuple[np.ndarray | BagStore, np.ndarray, list[Bag]]:
    """Stack the bags' features in memory (:func:`read_bags`) or leave them on disk (:class:`BagStore`).

    Parameters
    ----------
    paths
        Bag files, in the order wanted.
    in_memory
        True reads every row into one matrix, False returns a :class:`BagStore` over the files,
        None (default) reads into memory unless the matrix would exceed :data:`IN_MEMORY_LIMIT_BYTES`.

    Returns
    -------
    features, offsets, bags
        As :func:`read_bags`; from a store the bags' ``features`` are empty (0, d) arrays.
    """
    if in_memory is None:
        in_memory = fits_in_memory(paths)
    if in_memory:
        return read_bags(paths)
    store, offsets = BagStore.from_bags(paths)
    return store, offsets, [read_bag(p, features=False) for p in paths]
