"""The bag files as one feature store: rows read a batch at a time instead of one in-memory matrix.

Above :data:`IN_MEMORY_LIMIT_BYTES` of features a fold's bags are not stacked in memory; :class:`BagStore` maps each
global row to a bag file and a row in it and reads only the rows a batch needs.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from recipe_mil.io.bags import Bag, BagFileError, _features_dataset, _open_bag, bag_shape, read_bag, read_bags

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
