"""Synthetic-patient files (``synthetic.h5``) and recipe files (``recipes.json``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from recipe_mil import __version__
from recipe_mil.io.atomic import atomic_path, write_text_atomic
from recipe_mil.io.compact import set_attr, write_strings
from recipe_mil.types import ClassRecipe, SyntheticSet


def write_synthetic(
    path: str | os.PathLike[str], syn: SyntheticSet, *, attrs: Mapping[str, object] | None = None
) -> None:
    """Write synthetic patients (index-based, CSR) atomically.

    Parameters
    ----------
    path
        Destination ``synthetic.h5``.
    syn
        The synthetic set; its ``scores`` go to the group ``scores``.
    attrs
        Extra file attributes (pool path, instance source, seed, ...).
    """

    def numbers(group: h5py.Group, name: str, value: object) -> None:
        data = np.asarray(value)
        # compressed (lossless): row indices are small integers in int64, one file per generator and fold
        group.create_dataset(name, data=data, **({"compression": "gzip", "shuffle": True} if data.size else {}))

    # HDF5 1.10 object headers: a fraction of the default's fixed overhead per dataset in these small files
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver="v110") as f:
        numbers(f, "indptr", syn.indptr.astype(np.int64))
        numbers(f, "indices", syn.indices.astype(np.int64))
        # fixed-length strings: a variable-length one costs a 4 kB heap per dataset (most of a small file)
        write_strings(f, "label", syn.label)
        write_strings(f, "source_class", syn.source_class)
        for name in ("proportions", "soft_targets", "features", "selected"):
            value = getattr(syn, name)
            if value is not None:
                numbers(f, name, value)
        grp = f.create_group("scores")
        for name, values in syn.scores.items():
            numbers(grp, name, values)
        # strings as fixed-length UTF-8 (io.compact.set_attr): h5py reads them back as bytes
        for key, value in {"recipe_mil_version": __version__, **(attrs or {})}.items():
            set_attr(f, key, value)


def read_synthetic(path: str | os.PathLike[str]) -> SyntheticSet:
    """Read a ``synthetic.h5`` file written by :func:`write_synthetic`."""
    with h5py.File(path, "r") as f:
        return SyntheticSet(
            indptr=f["indptr"][()],
            indices=f["indices"][()],
            label=np.asarray(f["label"].asstr()[()], dtype=object),
            source_class=np.asarray(f["source_class"].asstr()[()], dtype=object),
            scores={k: v[()] for k, v in f["scores"].items()},
            **{k: f[k][()] for k in ("proportions", "soft_targets", "features", "selected") if k in f},
        )


def write_recipes(path: str | os.PathLike[str], recipes: Mapping[str, ClassRecipe], **meta: object) -> None:
    """Write ``recipes.json``: per class its recipe, plus metadata (K, BIC table, ...)."""
    doc = {**meta, "recipe_mil_version": __version__, "classes": {c: r.to_dict() for c, r in recipes.items()}}
    write_text_atomic(path, json.dumps(doc, indent=2))


def read_recipes(path: str | os.PathLike[str]) -> tuple[dict[str, ClassRecipe], dict[str, object]]:
    """Read ``recipes.json``; returns the class recipes and the remaining metadata."""
    doc = json.loads(Path(path).read_text())
    classes = doc.pop("classes")
    return {c: ClassRecipe.from_dict(d) for c, d in classes.items()}, doc
