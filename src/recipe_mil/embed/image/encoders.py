"""Frozen crop encoders: reading and preprocessing crops in a DataLoader, then the morphology features or a network."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from recipe_mil.device import resolve_device
from recipe_mil.embed.image.morphology import morphology_feature_names, morphology_features
from recipe_mil.embed.image.params import IMAGENET_MEAN, IMAGENET_STD
from recipe_mil.embed.image.reading import ImageInputError, list_image_files, read_image, to_rgb8

logger = logging.getLogger(__name__)


def _pad_to_square(rgb: np.ndarray) -> np.ndarray:
    """Pad a crop to a square with the median colour of its border (the slide background)."""
    h, w = rgb.shape[:2]
    if h == w:
        return rgb
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    fill = np.median(border, axis=0).astype(np.uint8)
    side = max(h, w)
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[...] = fill
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = rgb
    return out


class _Preprocess:
    """8-bit RGB crop -> normalised float tensor (3, size, size) for a network (picklable)."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.image_size = int(image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        square = _pad_to_square(rgb)
        if square.shape[0] != self.image_size:
            resized = Image.fromarray(square).resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
            square = np.asarray(resized)
        x = torch.from_numpy(np.array(square, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
        return (x - self.mean) / self.std


def _morphology_transform(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(morphology_features(rgb))


class _CropDataset(Dataset):
    """Reads crops (files or in-memory images) and applies a transform; errors are returned, not raised."""

    def __init__(self, items: Sequence[Path | np.ndarray | Image.Image], transform: Callable[[np.ndarray], Any]):
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        item = self.items[i]
        try:
            rgb = read_image(item) if isinstance(item, Path) else to_rgb8(item)
        except Exception as exc:  # any decoder error: corrupt, truncated or not an image
            return i, None, f"{type(exc).__name__}: {exc}"
        return i, self.transform(rgb), None


def _collate(
    items: list[tuple[int, torch.Tensor | None, str | None]],
) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    ok = [(i, x) for i, x, err in items if err is None and x is not None]
    errors = [(i, err) for i, _, err in items if err is not None]
    batch = torch.stack([x for _, x in ok]) if ok else None
    return [i for i, _ in ok], batch, errors


class Encoder:
    """A frozen crop encoder: call it on a list of images or on a folder.

    Attributes
    ----------
    name
        Encoder name as stored in bag files (``morphology``, ``dinobloom-s``, ``timm:...``).
    dim
        Embedding width.
    batch_size, num_workers, log_every
        Batching, DataLoader workers and progress logging of folder embedding.
    """

    def __init__(self, name: str, dim: int, *, batch_size: int = 64, num_workers: int = 0, log_every: int = 10):
        self.name = name
        self.dim = int(dim)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.log_every = int(log_every)

    # subclasses define how a crop becomes an input and how a batch of inputs becomes features
    def _transform(self) -> Callable[[np.ndarray], torch.Tensor]:
        raise NotImplementedError

    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    @property
    def _pin_memory(self) -> bool:
        return False

    def __call__(self, images: Sequence[np.ndarray | Image.Image] | str | os.PathLike[str]) -> np.ndarray:
        """Embed in-memory images, or every readable crop of a folder.

        Parameters
        ----------
        images
            A sequence of images (arrays of any type :func:`to_rgb8` accepts, or PIL
            images), or a folder (then unreadable files are skipped; use
            :meth:`embed_folder` for their instance ids).

        Returns
        -------
        numpy.ndarray
            float32 array (n_images, dim).
        """
        if isinstance(images, str | os.PathLike):
            return self.embed_folder(images)[0]
        return self.embed_images(images)

    def embed_images(self, images: Sequence[np.ndarray | Image.Image]) -> np.ndarray:
        """Embed in-memory images (in the main process).

        Parameters
        ----------
        images
            Images of any type :func:`to_rgb8` accepts.

        Returns
        -------
        numpy.ndarray
            float32 array (n_images, dim).

        Raises
        ------
        ValueError
            If an image cannot be converted to RGB.
        """
        transform = self._transform()
        out = [np.empty((0, self.dim), np.float32)]
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch = torch.stack([transform(to_rgb8(im)) for im in chunk])
            out.append(self._forward(batch))
        return np.concatenate(out).astype(np.float32, copy=False)

    def embed_folder(self, folder: str | os.PathLike[str], *, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Embed every crop of one patient's folder.

        Parameters
        ----------
        folder
            The patient's folder (files with a suffix in :data:`IMAGE_SUFFIXES`).
        strict
            If True, the first unreadable image raises; otherwise unreadable images are
            skipped, each logged with its reason, and counted.

        Returns
        -------
        features
            float32 array (n_readable, dim), in file-name order.
        instance_ids
            The file names of the embedded crops (object array of str).

        Raises
        ------
        ImageInputError
            If the folder is missing or empty, every image is unreadable, or (``strict``)
            one image is unreadable; the message names the folder or the file.
        """
        files = list_image_files(folder)
        loader = DataLoader(
            _CropDataset(files, self._transform()),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=self._pin_memory,
        )
        n_batches = len(loader)
        feats: list[np.ndarray] = []
        ids: list[str] = []
        bad: list[str] = []
        done = 0
        t0 = time.perf_counter()
        for b, (idx, batch, errors) in enumerate(loader, start=1):
            for i, err in errors:
                if strict:
                    raise ImageInputError(f"{files[i]}: cannot read image ({err})")
                logger.warning("%s: skipping unreadable image (%s)", files[i], err)
                bad.append(files[i].name)
            if batch is not None:
                feats.append(self._forward(batch))
                ids.extend(files[i].name for i in idx)
            done += len(idx) + len(errors)
            if b % self.log_every == 0 or b == n_batches:
                elapsed = max(time.perf_counter() - t0, 1e-9)
                logger.info(
                    "%s: %d/%d crops, batch %d/%d, %.1f crops/s (%s)",
                    folder,
                    done,
                    len(files),
                    b,
                    n_batches,
                    done / elapsed,
                    self.name,
                )
        if not ids:
            raise ImageInputError(f"{folder}: none of the {len(files)} image files could be read")
        features = np.concatenate(feats).astype(np.float32, copy=False)
        logger.info(
            "%s: embedded %d crops with %s (%d-d); skipped %d unreadable file(s)%s",
            folder,
            len(ids),
            self.name,
            self.dim,
            len(bad),
            f": {', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}" if bad else "",
        )
        if self.name == "morphology":
            n_blank = int((~features.any(axis=1)).sum())
            if n_blank:
                logger.warning("%s: no nucleus found in %d crop(s); their features are all zero", folder, n_blank)
        return features, np.asarray(ids, dtype=object)


class MorphologyEncoder(Encoder):
    """The ``morphology`` encoder: :func:`morphology_features` of every crop (no weights, CPU).

    With ``num_workers > 0`` the features are computed in the DataLoader's worker processes.
    """

    def __init__(self, *, batch_size: int = 64, num_workers: int = 0, log_every: int = 10):
        super().__init__(
            "morphology",
            len(morphology_feature_names()),
            batch_size=batch_size,
            num_workers=num_workers,
            log_every=log_every,
        )

    def _transform(self) -> Callable[[np.ndarray], torch.Tensor]:
        return _morphology_transform

    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        return batch.numpy().astype(np.float32, copy=False)


class TorchEncoder(Encoder):
    """A frozen torch network (DinoBloom or a timm backbone) applied to preprocessed crops.

    Parameters
    ----------
    model
        The network: maps a (n, 3, image_size, image_size) batch to (n, dim) features.
        It is put in eval mode, frozen and moved to ``device``.
    name
        Encoder name stored in bag files.
    dim
        Embedding width.
    image_size
        Side of the network input; crops are padded to a square with their border colour
        and resized (bicubic).
    mean, std
        Per-channel normalisation of the 0-1 input.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``... (see :func:`recipe_mil.device.resolve_device`).
        On a GPU the forward pass runs under bf16 autocast; features are returned as float32.
    batch_size, num_workers, log_every
        See :class:`ImageEmbedParams`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        dim: int,
        image_size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        device: str = "auto",
        batch_size: int = 64,
        num_workers: int = 0,
        log_every: int = 10,
    ):
        super().__init__(name, dim, batch_size=batch_size, num_workers=num_workers, log_every=log_every)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    @property
    def _pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def _transform(self) -> Callable[[np.ndarray], torch.Tensor]:
        return _Preprocess(self.image_size, self.mean, self.std)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), self._autocast():
            out = self.model(batch.to(self.device, non_blocking=True))
        if out.ndim != 2 or out.shape[1] != self.dim:
            raise RuntimeError(f"encoder {self.name} returned shape {tuple(out.shape)}, expected (n, {self.dim})")
        return out.float().cpu().numpy()
