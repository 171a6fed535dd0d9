"""Bags as row indices into one shared feature matrix, batching and balanced sampling.

Real patients are contiguous row ranges of the feature matrix; synthetic patients are
arbitrary rows of it (repeats allowed), so a synthetic bag costs 8 bytes per instance.

The matrix is either in memory (a numpy array) or a row store read on demand (a
:class:`RowStore`, e.g. :class:`recipe_mil.io.store.BagStore` over the bag files): a batch then
reads only the rows it needs, after the per-bag subsample is drawn, so training and prediction
on a cohort larger than memory hold one batch of features at a time. Both give the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor


@runtime_checkable
class RowStore(Protocol):
    """A float32 matrix of shape ``(n_rows, d)`` whose rows are read on demand.

    ``take(rows)`` returns the rows ``rows`` (int64, any order, repeats allowed) as a new
    float32 array of shape ``(len(rows), d)``.
    """

    shape: tuple[int, int]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Return rows ``rows`` as float32 of shape (len(rows), d)."""
        ...


Features = np.ndarray | RowStore
"""A feature matrix: in memory, or a :class:`RowStore`."""


class ConcatRows:
    """Row stores and arrays stacked (first part's rows first) without copying any rows.

    Parameters
    ----------
    parts
        Matrices of the same width (arrays or :class:`RowStore`); nested ``ConcatRows`` are flattened.
    """

    def __init__(self, parts: Sequence[Features]) -> None:
        flat: list[Features] = []
        for part in parts:
            flat += part.parts if isinstance(part, ConcatRows) else [part]
        widths = {int(p.shape[1]) for p in flat}
        if len(widths) > 1:
            raise ValueError(f"feature dimensions differ: {sorted(widths)}")
        self.parts = flat
        self.offsets = np.concatenate([[0], np.cumsum([p.shape[0] for p in flat])]).astype(np.int64)
        self.shape = (int(self.offsets[-1]), widths.pop() if widths else 0)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` of the stacked matrix, float32 (each part asked once)."""
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((idx.size, self.shape[1]), dtype=np.float32)
        part = np.searchsorted(self.offsets, idx, side="right") - 1
        for k in np.unique(part):
            sel = np.flatnonzero(part == k)
            local = idx[sel] - self.offsets[k]
            out[sel] = take_rows(self.parts[k], local)
        return out


def take_rows(features: Features, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of an in-memory matrix or a :class:`RowStore`, as float32 of shape (len(rows), d)."""
    if isinstance(features, np.ndarray):
        return features[np.asarray(rows, dtype=np.int64)]
    return features.take(np.asarray(rows, dtype=np.int64))


def features_on(features: Features, device: torch.device) -> Tensor | None:
    """Copy an in-memory matrix to a GPU once, for gathering batches there; None on CPU or for a store."""
    if device.type != "cuda" or not isinstance(features, np.ndarray):
        return None
    return torch.from_numpy(features).to(device)


@dataclass
class BagCollection:
    """A set of bags that index rows of one shared feature matrix.

    Attributes
    ----------
    features
        Float32 matrix of shape (n_rows, d), shared by all bags: an array, or a
        :class:`RowStore` read a batch at a time.
    bag_indices
        One int64 array of row indices into ``features`` per bag.
    labels
        Int64 class index per bag, shape (n_bags,).
    names
        Bag (patient) names.
    soft_targets
        Optional float matrix of shape (n_bags, n_classes) whose rows sum to 1. When given,
        training minimises the cross-entropy against these rows; ``labels`` is still used
        for class-balanced sampling and for validation metrics.
    """

    features: Features
    bag_indices: list[np.ndarray]
    labels: np.ndarray
    names: list[str]
    soft_targets: np.ndarray | None = None

    def __post_init__(self) -> None:
        if isinstance(self.features, np.ndarray) or not isinstance(self.features, RowStore):
            self.features = np.asarray(self.features, dtype=np.float32)
        if len(self.features.shape) != 2:
            raise ValueError(f"features must be 2-D, got shape {self.features.shape}")
        self.bag_indices = [np.asarray(ix, dtype=np.int64).reshape(-1) for ix in self.bag_indices]
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.names = [str(n) for n in self.names]
        n_bags = len(self.bag_indices)
        if self.labels.shape[0] != n_bags or len(self.names) != n_bags:
            raise ValueError(f"{n_bags} bags but {self.labels.shape[0]} labels and {len(self.names)} names")
        if n_bags and (self.labels.min() < 0):
            raise ValueError("labels must be non-negative class indices")
        n_rows = self.features.shape[0]
        for name, ix in zip(self.names, self.bag_indices, strict=True):
            if ix.size and (ix.min() < 0 or ix.max() >= n_rows):
                raise ValueError(f"bag {name!r} indexes rows outside [0, {n_rows})")
        if self.soft_targets is not None:
            soft = np.asarray(self.soft_targets, dtype=np.float32)
            if soft.ndim != 2 or soft.shape[0] != n_bags:
                raise ValueError(f"soft_targets must have shape ({n_bags}, n_classes), got {soft.shape}")
            if soft.size and (soft.min() < 0 or not np.allclose(soft.sum(axis=1), 1.0, atol=1e-4)):
                raise ValueError("soft_targets rows must be non-negative and sum to 1")
            self.soft_targets = soft

    def __len__(self) -> int:
        return len(self.bag_indices)

    @property
    def dim(self) -> int:
        """Dimension of the instance embeddings."""
        return int(self.features.shape[1])

    @property
    def bag_sizes(self) -> np.ndarray:
        """Number of instances of each bag, int64 array of shape (n_bags,)."""
        return np.array([ix.shape[0] for ix in self.bag_indices], dtype=np.int64)

    @classmethod
    def from_offsets(
        cls,
        features: np.ndarray,
        offsets: Sequence[int] | np.ndarray,
        labels: Sequence[int] | np.ndarray,
        names: Sequence[str],
        *,
        soft_targets: np.ndarray | None = None,
    ) -> BagCollection:
        """Build a collection of contiguous bags from row offsets.

        Parameters
        ----------
        features
            Matrix of shape (n_rows, d) with the bags' rows stacked.
        offsets
            Non-decreasing row offsets of length n_bags + 1; bag ``i`` is rows
            ``offsets[i]:offsets[i + 1]``.
        labels
            Class index per bag.
        names
            Bag names.
        soft_targets
            Optional soft targets, shape (n_bags, n_classes).

        Returns
        -------
        BagCollection
            The collection.
        """
        off = np.asarray(offsets, dtype=np.int64).reshape(-1)
        if off.size < 1 or np.any(np.diff(off) < 0) or off[0] < 0 or off[-1] > np.shape(features)[0]:
            raise ValueError("offsets must be non-decreasing row offsets within the feature matrix")
        indices = [np.arange(off[i], off[i + 1], dtype=np.int64) for i in range(off.size - 1)]
        return cls(features, indices, np.asarray(labels), list(names), soft_targets)

    def subset(self, bag_ids: Sequence[int] | np.ndarray) -> BagCollection:
        """Return the bags ``bag_ids`` (in that order) as a new collection sharing ``features``.

        Parameters
        ----------
        bag_ids
            Positions of the bags to keep.

        Returns
        -------
        BagCollection
            The selected bags; the feature matrix is shared, not copied.
        """
        ids = np.asarray(bag_ids, dtype=np.int64).reshape(-1)
        soft = None if self.soft_targets is None else self.soft_targets[ids]
        return BagCollection(
            self.features,
            [self.bag_indices[i] for i in ids],
            self.labels[ids],
            [self.names[i] for i in ids],
            soft,
        )


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    if labels.size and labels.max() >= n_classes:
        raise ValueError(f"label {int(labels.max())} does not fit soft targets with {n_classes} classes")
    out = np.zeros((labels.shape[0], n_classes), dtype=np.float32)
    out[np.arange(labels.shape[0]), labels] = 1.0
    return out


def concat_collections(a: BagCollection, b: BagCollection) -> BagCollection:
    """Concatenate two collections: bags of ``a`` first, then bags of ``b``.

    The feature matrices are stacked (``a``'s rows first; copied when both are in memory, a
    :class:`ConcatRows` view when one is a :class:`RowStore`) and ``b``'s row indices are
    shifted by the number of rows of ``a``. If only one side has soft targets, the other
    side's labels become one-hot rows.

    Parameters
    ----------
    a, b
        Collections with the same feature dimension.

    Returns
    -------
    BagCollection
        The concatenated collection.
    """
    if a.dim != b.dim:
        raise ValueError(f"feature dimensions differ: {a.dim} and {b.dim}")
    shift = a.features.shape[0]
    if isinstance(a.features, np.ndarray) and isinstance(b.features, np.ndarray):
        features: Features = np.concatenate([a.features, b.features], axis=0)
    else:
        features = ConcatRows([a.features, b.features])
    indices = list(a.bag_indices) + [ix + shift for ix in b.bag_indices]
    labels = np.concatenate([a.labels, b.labels])
    names = list(a.names) + list(b.names)
    soft: np.ndarray | None = None
    if a.soft_targets is not None or b.soft_targets is not None:
        n_classes = next(s.shape[1] for s in (a.soft_targets, b.soft_targets) if s is not None)
        soft_a = a.soft_targets if a.soft_targets is not None else _one_hot(a.labels, n_classes)
        soft_b = b.soft_targets if b.soft_targets is not None else _one_hot(b.labels, n_classes)
        if soft_a.shape[1] != soft_b.shape[1]:
            raise ValueError(f"soft targets have {soft_a.shape[1]} and {soft_b.shape[1]} classes")
        soft = np.concatenate([soft_a, soft_b], axis=0)
    return BagCollection(features, indices, labels, names, soft)


def collate(
    collection: BagCollection,
    bag_ids: Sequence[int] | np.ndarray,
    *,
    max_instances: int | None = None,
    rng: np.random.Generator | None = None,
    source: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Gather bags into one zero-padded batch.

    The batch is gathered from the shared feature matrix in one indexing operation (from a
    :class:`RowStore`, only the batch's rows are read, after the subsample is drawn); with
    ``source`` (the same matrix as a tensor, e.g. kept on the GPU for the whole training) it
    is gathered there and the batch is created on that device, with no host copy.

    Parameters
    ----------
    collection
        The bags.
    bag_ids
        Positions of the bags in the batch.
    max_instances
        Keep at most this many instances per bag, drawn at random without replacement
        (in their original order). Only applied when ``rng`` is given.
    rng
        Random generator for the subsampling; None keeps every instance.
    source
        ``collection.features`` as a tensor on the device the batch should live on.

    Returns
    -------
    x
        Float32 tensor of shape (B, N_max, d), zero at padded positions.
    mask
        Bool tensor of shape (B, N_max); True marks a real instance.
    y
        Int64 tensor of labels, shape (B,).
    soft
        Float32 tensor of soft targets, shape (B, n_classes), or None.
    """
    ids = np.asarray(bag_ids, dtype=np.int64).reshape(-1)
    if max_instances is not None and max_instances < 1:
        raise ValueError(f"max_instances must be positive, got {max_instances}")
    rows: list[np.ndarray] = []
    for i in ids:
        ix = collection.bag_indices[i]
        if rng is not None and max_instances is not None and ix.shape[0] > max_instances:
            keep = np.sort(rng.choice(ix.shape[0], size=max_instances, replace=False))
            ix = ix[keep]
        rows.append(ix)
    sizes = np.array([r.shape[0] for r in rows], dtype=np.int64)
    n_max = max(int(sizes.max(initial=0)), 1)
    flat = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    if source is None and not isinstance(collection.features, np.ndarray):
        gathered = torch.from_numpy(take_rows(collection.features, flat))  # a store reads the batch's rows only
    else:
        feats = torch.from_numpy(collection.features) if source is None else source
        gathered = feats[torch.from_numpy(flat).to(feats.device)]
    slot = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # position inside its bag
    where = torch.from_numpy(np.repeat(np.arange(len(ids)), sizes) * n_max + slot).to(gathered.device)
    x = torch.zeros((len(ids) * n_max, collection.dim), dtype=gathered.dtype, device=gathered.device)
    x[where] = gathered
    mask = torch.from_numpy(np.arange(n_max)[None, :] < sizes[:, None]).to(gathered.device)
    x = x.view(len(ids), n_max, collection.dim)
    y = torch.from_numpy(collection.labels[ids].copy())
    soft = None if collection.soft_targets is None else torch.from_numpy(collection.soft_targets[ids].copy())
    return x, mask, y, soft


def balanced_epoch(labels: Sequence[int] | np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw bag ids for one class-balanced epoch.

    Each bag is drawn with replacement, with probability proportional to one over the
    number of bags of its class, so every class present is drawn equally often in
    expectation.

    Parameters
    ----------
    labels
        Class index per bag.
    n
        Number of draws.
    rng
        Random generator.

    Returns
    -------
    numpy.ndarray
        Int64 array of ``n`` bag positions.
    """
    lab = np.asarray(labels).reshape(-1)
    if lab.size == 0:
        raise ValueError("cannot sample from an empty set of bags")
    _, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    return rng.choice(lab.size, size=n, replace=True, p=weights / weights.sum()).astype(np.int64)
