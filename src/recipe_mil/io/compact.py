"""Small HDF5 files: text as fixed-length UTF-8 strings instead of variable-length ones.

HDF5 keeps every variable-length string dataset's values in a global heap collection of at least 4 kB, whatever
their size; the per-fold files (pools, synthetic patients) hold a few short strings each, so most of their bytes
were these heaps. Fixed-length UTF-8 strings read back the same through h5py's ``asstr()`` and anndata.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable

import h5py
import numpy as np

from recipe_mil.io.atomic import atomic_path

__all__ = ["compact_copy", "set_attr", "write_compact_h5", "write_strings"]


def write_strings(group: h5py.Group, name: str, values: Iterable[object], **kwargs: object) -> h5py.Dataset:
    """Write strings (any shape given as an array) as a fixed-length UTF-8 dataset; ``kwargs`` go to h5py.

    Returns
    -------
    h5py.Dataset
        The new dataset; ``dataset.asstr()[()]`` returns the strings.
    """
    values = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=object)
    encoded = [str(v).encode("utf-8") for v in values.ravel()]
    width = max([len(v) for v in encoded] + [1])
    dataset = group.create_dataset(name, shape=values.shape, dtype=h5py.string_dtype("utf-8", width), **kwargs)
    if values.size:  # numpy's bytes are ASCII to h5py: write them with the file's (UTF-8) type
        data = np.array(encoded, dtype=f"S{width}").reshape(values.shape)
        dataset.id.write(h5py.h5s.ALL, h5py.h5s.ALL, data, mtype=dataset.id.get_type())
    return dataset


def set_attr(obj: h5py.HLObject, key: str, value: object) -> None:
    """Set an attribute; a string as a fixed-length UTF-8 string (h5py reads it back as ``numpy.bytes_``).

    One variable-length string attribute alone makes the file carry a 4 kB heap (4 of a synthetic file's 9 kB).
    """
    if isinstance(value, str):
        data = value.encode("utf-8")
        width = max(len(data), 1)
        obj.attrs.create(key, data=np.array(data, dtype=f"S{width}"), dtype=h5py.string_dtype("utf-8", width))
    else:
        obj.attrs[key] = value


def compact_copy(src: h5py.Group, dst: h5py.Group) -> None:
    """Copy ``src`` into ``dst``: the same tree and attributes, strings fixed-length, arrays gzip-compressed."""
    dst.attrs.update(dict(src.attrs))
    for name, obj in src.items():
        if isinstance(obj, h5py.Group):
            compact_copy(obj, dst.create_group(name))
            continue
        kwargs = {"compression": "gzip", "shuffle": True} if obj.shape and obj.size else {}
        info = h5py.check_string_dtype(obj.dtype)
        if obj.shape is None:  # an empty (null-space) dataset
            new = dst.create_dataset(name, data=h5py.Empty(obj.dtype))
        elif info is not None and info.length is None:
            new = write_strings(dst, name, np.asarray(obj.asstr()[()], dtype=object), **kwargs)
        else:
            new = dst.create_dataset(name, data=obj[()], **kwargs)
        new.attrs.update(dict(obj.attrs))


def write_compact_h5(path: str | os.PathLike[str], fill: Callable[[h5py.File], None]) -> None:
    """Write an HDF5 file atomically: ``fill(file)`` writes it in memory, :func:`compact_copy` stores it.

    For writers that only make variable-length strings (anndata's ``write_elem``).
    """
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        fill(f)
    with atomic_path(path) as tmp, h5py.File(buffer, "r") as src, h5py.File(tmp, "w", libver="v110") as dst:
        compact_copy(src, dst)
