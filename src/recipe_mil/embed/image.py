"""Per-patient bags of single-cell image embeddings (modality ``image``; see ``docs/method.md``).

A patient is one folder of single-cell crops (PNG, JPEG or TIFF, any size). Every crop
is read as 8-bit RGB (:func:`read_image`) and embedded by a frozen encoder:

``dinobloom-s``, ``dinobloom-b``, ``dinobloom-l``, ``dinobloom-g``
    DinoBloom (DINOv2 ViT-S/B/L/g with 14-px patches fine-tuned on blood cells;
    384/768/1024/1536-d class token) built with timm (``vit_*_patch14_dinov2``,
    ``pretrained=False``) for ``image_size`` (224) input, weights from a local file:
    the official checkpoint layout (``{"teacher": {"backbone.<DINOv2 key>": ...,
    "dino_head.*": ...}}`` with a 257-token ``pos_embed``) or a plain state dict.
    Loading is strict. Crops are padded to a square with their border colour, resized
    (bicubic) and normalised with the ImageNet mean and sd.
``timm:<model-name>``
    Any timm backbone (``pretrained=False``, ``num_classes=0``) with weights from a
    local file; the features are its pooled pre-logits. Classifier weights in the file
    are dropped; everything else must match.
``morphology`` (the offline default, no weights)
    Hand-crafted features of the central white cell (:func:`morphology_features`):
    segmentation of cell and nucleus by colour, then size, shape, colour and texture.

Nothing is ever downloaded: there is no hub access; the weights come from
``ImageEmbedParams.weights``, a local path.

The ViT encoders run batched through a :class:`torch.utils.data.DataLoader` (reading and
preprocessing in ``num_workers`` processes), under bf16 autocast on a GPU and in float32
on the CPU; progress goes to the ``recipe_mil.embed.image`` logger.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import ndimage
from torch import nn
from torch.utils.data import DataLoader, Dataset

from recipe_mil.device import resolve_device
from recipe_mil.io.bags import BagFileError, instance_truth, write_bag

logger = logging.getLogger("recipe_mil.embed.image")

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
"""File suffixes (case-insensitive) read from a patient's folder; other files are ignored."""

DINOBLOOM_MODELS: dict[str, tuple[str, int]] = {
    "dinobloom-s": ("vit_small_patch14_dinov2", 384),
    "dinobloom-b": ("vit_base_patch14_dinov2", 768),
    "dinobloom-l": ("vit_large_patch14_dinov2", 1024),
    "dinobloom-g": ("vit_giant_patch14_dinov2", 1536),
}
"""DinoBloom encoder name -> (timm architecture, embedding width)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PATCH = 14  # DinoBloom / DINOv2 patch size
_HEAD_PREFIXES = ("dino_head.", "ibot_head.", "head.")  # training heads dropped from DinoBloom checkpoints
_WRAPPER_KEYS = ("teacher", "model", "state_dict", "model_state_dict", "module")


class ImageInputError(BagFileError):
    """A patient's image folder or one of its images cannot be used (names the folder or file)."""


class EncoderWeightsError(ValueError):
    """An encoder's weights file is missing or does not match the encoder."""


@dataclass
class ImageEmbedParams:
    """Options of the image embedding.

    Attributes
    ----------
    encoder
        ``"morphology"``, ``"dinobloom-s"``, ``"dinobloom-b"``, ``"dinobloom-l"``,
        ``"dinobloom-g"`` or ``"timm:<model-name>"``.
    weights
        Local path of the encoder's weights (``.pth``/``.pt``/``.bin`` read with
        ``torch.load(weights_only=True)``, or ``.safetensors``). Required by every encoder
        but ``morphology``; never downloaded.
    batch_size
        Crops per batch.
    num_workers
        DataLoader worker processes reading and preprocessing crops (0: in the main process).
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        Ignored by ``morphology``.
    strict
        If True, an unreadable image fails the patient with an error naming the file;
        otherwise it is skipped, logged and counted.
    image_size
        Side (px) of the square network input; a multiple of 14 for DinoBloom, whose
        checkpoints hold a 257-token position embedding for 224 px. Ignored by ``morphology``.
    log_every
        Log progress every this many batches.
    """

    encoder: str = "morphology"
    weights: str | None = None
    batch_size: int = 64
    num_workers: int = 0
    device: str = "auto"
    strict: bool = False
    image_size: int = 224
    log_every: int = 10

    def __post_init__(self) -> None:
        checks = {
            "batch_size": self.batch_size >= 1,
            "num_workers": self.num_workers >= 0,
            "image_size": self.image_size >= 16,
            "log_every": self.log_every >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            detail = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"ImageEmbedParams: invalid value(s): {detail}")
        _check_encoder_name(self.encoder)


def _check_encoder_name(name: str) -> None:
    if name == "morphology" or name in DINOBLOOM_MODELS:
        return
    if name.startswith("timm:") and len(name) > len("timm:"):
        return
    known = ["morphology", *DINOBLOOM_MODELS, "timm:<model-name>"]
    raise ValueError(f"unknown image encoder {name!r}; expected one of {known}")


# --------------------------------------------------------------------------- reading images


def _unit_float(a: np.ndarray) -> np.ndarray:
    """Scale one image's channels (any dtype) to float32 in [0, 1].

    Integers wider than 8 bits are divided by ``2**b - 1`` for the smallest standard
    depth ``b`` in (8, 10, 12, 14, 16, 32) that holds the image's maximum, so 12-bit
    camera data stored in 16-bit files is not rendered dark (a bright-field background
    sits near full scale). Floats are taken as 0-1, or 0-255 when their maximum exceeds 1.
    """
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if np.issubdtype(a.dtype, np.integer):
        a = np.clip(a.astype(np.float64), 0, None)
        top = float(a.max()) if a.size else 0.0
        depth = next((b for b in (8, 10, 12, 14, 16, 32) if top < 2**b), 64)
        return (a / (2.0**depth - 1.0)).astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(a.max()) if a.size else 0.0
        if top > 1.0 + 1e-6:
            a = a / (255.0 if top <= 255.0 else top)
        return np.clip(a, 0.0, 1.0)
    raise ValueError(f"unsupported pixel type {a.dtype}")


def to_rgb8(image: np.ndarray | Image.Image) -> np.ndarray:
    """Convert an image to 8-bit RGB.

    Parameters
    ----------
    image
        A PIL image or an array (H, W), (H, W, C) or (C, H, W) with C in 1-4 (grey,
        grey + alpha, RGB, RGBA) of any integer or float type (see :func:`read_image`).

    Returns
    -------
    numpy.ndarray
        uint8 array (H, W, 3). Grey is replicated to three channels; transparency is
        composited over white (the colour of an empty slide).

    Raises
    ------
    ValueError
        If the array is not an image.
    """
    if isinstance(image, Image.Image):
        return to_rgb8(_pil_array(image))
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] > 4 and a.shape[0] <= 4:  # channels first
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4) or min(a.shape[:2]) < 2:
        raise ValueError(f"not a 2-d grey/RGB(A) image: array of shape {a.shape}")
    if a.dtype == np.uint8 and a.shape[-1] == 3:
        return np.ascontiguousarray(a)
    n_colour = 1 if a.shape[-1] <= 2 else 3
    colour = _unit_float(a[..., :n_colour])
    if n_colour == 1:
        colour = np.repeat(colour, 3, axis=-1)
    if a.shape[-1] in (2, 4):
        alpha = _unit_float(a[..., -1:])
        colour = colour * alpha + (1.0 - alpha)
    return np.rint(np.clip(colour, 0.0, 1.0) * 255.0).astype(np.uint8)


def _pil_array(im: Image.Image) -> np.ndarray:
    """Pixel array of a PIL image in a mode :func:`to_rgb8` understands."""
    if im.mode in ("1", "L", "LA", "RGB", "RGBA", "I", "F") or im.mode.startswith("I;16"):
        return np.asarray(im)
    if im.mode in ("P", "PA"):
        return np.asarray(im.convert("RGBA"))
    return np.asarray(im.convert("RGB"))


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one crop as 8-bit RGB.

    PNG and JPEG are read with Pillow, TIFF with tifffile (first page; channels-first
    and multi-sample files included). 16-bit and other deep images are scaled linearly
    (see :func:`to_rgb8`); grey becomes RGB; alpha is composited over white.

    Parameters
    ----------
    path
        Image file.

    Returns
    -------
    numpy.ndarray
        uint8 array (H, W, 3).

    Raises
    ------
    Exception
        Whatever the decoder raises for a corrupt or truncated file, or ``ValueError``
        for an array that is not an image.
    """
    p = Path(path)
    if p.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return to_rgb8(tifffile.imread(p, key=0))
    with Image.open(p) as im:
        im.load()
        return to_rgb8(_pil_array(im))


def list_image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """List the crops of one patient's folder, sorted by file name.

    Parameters
    ----------
    folder
        The patient's folder (not searched recursively).

    Returns
    -------
    list[pathlib.Path]
        Files with a suffix in :data:`IMAGE_SUFFIXES`, hidden files excluded.

    Raises
    ------
    ImageInputError
        If the folder does not exist or holds no image file.
    """
    d = Path(folder)
    if not d.is_dir():
        raise ImageInputError(f"{d}: image folder does not exist")
    files = sorted(
        (p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )
    if not files:
        raise ImageInputError(f"{d}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return files


# --------------------------------------------------------------------------- morphology features

# name, offset, scale: a feature is (raw - offset) / scale with these fixed constants, so that
# every feature is of order one. They are rounded typical values and spreads of white cells in
# ~100-px crops at ~3 px/um (measured once on simulated crops of all cell types and stain
# shifts, then frozen): a crop's features depend on that crop alone, and no statistic is ever
# fitted on the data being embedded, so nothing leaks between patients, folds or cohorts.
_MORPH_FEATURES: tuple[tuple[str, float, float], ...] = (
    # size and shape
    ("cell_log_area", 7.3, 0.4),
    ("nucleus_log_area", 6.2, 0.45),
    ("nc_ratio", 0.4, 0.15),
    ("cell_log_perimeter", 5.0, 0.2),
    ("nucleus_log_perimeter", 4.6, 0.2),
    ("cell_circularity", 0.9, 0.05),
    ("nucleus_circularity", 0.7, 0.25),
    ("cell_eccentricity", 0.4, 0.15),
    ("nucleus_eccentricity", 0.65, 0.25),
    ("cell_solidity", 0.97, 0.015),
    ("nucleus_solidity", 0.85, 0.12),
    ("nucleus_lobes", 1.7, 0.9),
    ("nucleus_components", 1.0, 0.3),
    ("nucleus_offset", 0.06, 0.08),
    # colour: optical density (relative to the crop's background) and HSV
    ("nucleus_od_r_mean", 0.95, 0.2),
    ("nucleus_od_g_mean", 1.05, 0.2),
    ("nucleus_od_b_mean", 0.42, 0.09),
    ("nucleus_od_r_sd", 0.2, 0.06),
    ("nucleus_od_g_sd", 0.24, 0.05),
    ("nucleus_od_b_sd", 0.09, 0.02),
    ("cyto_od_r_mean", 0.25, 0.1),
    ("cyto_od_g_mean", 0.25, 0.06),
    ("cyto_od_b_mean", 0.15, 0.1),
    ("cyto_od_r_sd", 0.13, 0.055),
    ("cyto_od_g_sd", 0.125, 0.035),
    ("cyto_od_b_sd", 0.07, 0.045),
    ("nucleus_hue_cos", -0.13, 0.075),
    ("nucleus_hue_sin", -0.42, 0.06),
    ("nucleus_saturation", 0.45, 0.07),
    ("nucleus_value", 0.57, 0.04),
    ("cyto_hue_cos", 0.03, 0.15),
    ("cyto_hue_sin", -0.05, 0.04),
    ("cyto_saturation", 0.165, 0.07),
    ("cyto_value", 0.81, 0.035),
    # texture
    ("nucleus_glcm_contrast", 2.7, 1.1),
    ("nucleus_glcm_homogeneity", 0.55, 0.09),
    ("nucleus_glcm_energy", 0.23, 0.09),
    ("nucleus_glcm_correlation", 0.53, 0.06),
    ("nucleus_glcm_entropy", 5.0, 0.8),
    ("cyto_glcm_contrast", 1.0, 0.7),
    ("cyto_glcm_entropy", 3.4, 0.85),
    ("nucleus_gradient_mean", 0.3, 0.085),
    ("nucleus_gradient_sd", 0.175, 0.04),
    ("cyto_gradient_mean", 0.18, 0.1),
    ("nucleus_light_spots", 0.12, 0.05),
    ("cyto_granularity", 0.01, 0.012),
    ("cyto_granule_fraction", 0.02, 0.04),
)
_MORPH_OFFSET = np.array([f[1] for f in _MORPH_FEATURES], dtype=np.float32)
_MORPH_SCALE = np.array([f[2] for f in _MORPH_FEATURES], dtype=np.float32)

_FG_OD = 0.15  # summed optical density above which a pixel is stained (cell or red cell)
_NUC_THRESHOLD_RANGE = (0.25, 0.7)  # Otsu threshold of the nucleus channel is clipped to this range
_GLCM_LEVELS = 16
_GLCM_OD_MAX = 1.6  # mean optical density mapped to the top grey level


def morphology_feature_names() -> list[str]:
    """Names of the ``morphology`` encoder's features, in output order.

    Returns
    -------
    list[str]
        One name per feature.
    """
    return [f[0] for f in _MORPH_FEATURES]


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx**2 + yy**2) <= r * r + 0.5


def _optical_density(rgb: np.ndarray) -> np.ndarray:
    """Per-channel optical density relative to the crop's background (float32, >= 0)."""
    img = rgb.astype(np.float32)
    # background: a high percentile per channel (bright-field slide), floored so a crop
    # without background is not normalised to its own cytoplasm
    bg = np.maximum(np.percentile(img.reshape(-1, 3), 97, axis=0), 160.0)
    return np.clip(np.log((bg + 1.0) / (img + 1.0)), 0.0, None)


def _glcm_stats(q: np.ndarray) -> tuple[float, float, float, float, float]:
    """Contrast, homogeneity, energy, correlation and entropy of a masked grey-level image.

    ``q`` holds levels ``1..L`` inside the region and 0 outside; pairs touching level 0
    are ignored. Offsets 1 and 2 px in four directions, symmetric, pooled.
    """
    levels = _GLCM_LEVELS + 1
    counts = np.zeros((levels, levels), dtype=np.float64)
    h, w = q.shape
    for dy, dx in ((0, 1), (1, 1), (1, 0), (1, -1), (0, 2), (2, 2), (2, 0), (2, -2)):
        a = q[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
        b = q[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
        counts += np.bincount((a * levels + b).ravel(), minlength=levels * levels).reshape(levels, levels)
    p = counts[1:, 1:]
    p = p + p.T
    total = p.sum()
    if total <= 0:
        return 0.0, 1.0, 1.0, 1.0, 0.0
    p = p / total
    i, j = np.indices(p.shape, dtype=np.float64)
    diff2 = (i - j) ** 2
    contrast = float((p * diff2).sum())
    homogeneity = float((p / (1.0 + diff2)).sum())
    energy = float(np.sqrt((p**2).sum()))
    mu = float((p * i).sum())
    var = float((p * (i - mu) ** 2).sum())
    correlation = float((p * (i - mu) * (j - mu)).sum() / var) if var > 1e-12 else 1.0
    nz = p[p > 0]
    entropy = float(-(nz * np.log2(nz)).sum())
    return contrast, homogeneity, energy, correlation, entropy


def _shape_stats(mask: np.ndarray) -> tuple[float, float, float, float, float, np.ndarray]:
    """Area, perimeter, eccentricity, solidity, circularity and centroid (y, x) of a mask."""
    from skimage.measure import regionprops

    props = regionprops(mask.astype(np.uint8))[0]
    area = float(props.area)
    perimeter = float(props.perimeter) or 1.0
    circularity = float(min(1.5, 4.0 * math.pi * area / perimeter**2))
    return area, perimeter, float(props.eccentricity), float(props.solidity), circularity, np.asarray(props.centroid)


def _hsv_stats(hsv: np.ndarray, mask: np.ndarray) -> list[float]:
    if not mask.any():
        return [0.0, 0.0, 0.0, 0.0]
    h, s, v = hsv[..., 0][mask], hsv[..., 1][mask], hsv[..., 2][mask]
    angle = 2.0 * np.pi * h
    return [float((s * np.cos(angle)).mean()), float((s * np.sin(angle)).mean()), float(s.mean()), float(v.mean())]


def _od_stats(od: np.ndarray, mask: np.ndarray) -> list[float]:
    if not mask.any():
        return [0.0] * 6
    vals = od[mask]
    return [*map(float, vals.mean(axis=0)), *map(float, vals.std(axis=0))]


def segment_cell(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segment the central white cell and its nucleus by colour.

    Works in optical density relative to the crop's background. Stained pixels have a
    summed density above 0.15; the nucleus channel is ``min(OD_red, OD_green)`` (Giemsa
    chromatin absorbs red and green, whereas red cells and eosinophil granules pass red
    and basophilic cytoplasm passes green), thresholded with Otsu's method within the
    stained pixels (clipped to 0.25-0.7). The nucleus nearest the centre picks the
    stained region of the cell; a marker watershed on its distance transform splits off
    touching red cells (a maximum of the distance transform is another object when it lies
    farther from the nucleus than half its inscribed radius plus one pixel).

    Parameters
    ----------
    rgb
        uint8 array (H, W, 3).

    Returns
    -------
    cell, nucleus
        Boolean masks (H, W); both empty when no nucleus is found.
    """
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    od = _optical_density(rgb)
    h, w = od.shape[:2]
    total = ndimage.gaussian_filter(od.sum(axis=-1), 0.8)
    nuc_channel = ndimage.gaussian_filter(np.minimum(od[..., 0], od[..., 1]), 0.8)
    fg = ndimage.binary_fill_holes(total > _FG_OD)
    empty = np.zeros((h, w), dtype=bool)
    if fg.sum() < 16:
        return empty, empty
    stained = nuc_channel[fg]
    try:
        t = float(threshold_otsu(stained)) if np.ptp(stained) > 1e-6 else _NUC_THRESHOLD_RANGE[1]
    except ValueError:
        t = _NUC_THRESHOLD_RANGE[1]
    t = float(np.clip(t, *_NUC_THRESHOLD_RANGE))
    nuc_all = ndimage.binary_fill_holes((nuc_channel > t) & fg)
    labels, n = ndimage.label(nuc_all)
    if n == 0:
        return empty, empty
    idx = np.arange(1, n + 1)
    areas = ndimage.sum_labels(nuc_all, labels, idx)
    centroids = np.asarray(ndimage.center_of_mass(nuc_all, labels, idx)).reshape(n, 2)
    d = np.hypot(centroids[:, 0] - (h - 1) / 2, centroids[:, 1] - (w - 1) / 2)
    score = areas * np.exp(-((d / (0.3 * min(h, w))) ** 2))
    score[areas < 6] = 0.0
    if score.max() <= 0:
        return empty, empty
    main = int(idx[np.argmax(score)])
    fg_labels, _ = ndimage.label(fg)
    region = fg_labels == np.bincount(fg_labels[labels == main]).argmax()
    seeds = region & nuc_all
    seeds = seeds & ~np.isin(labels, idx[areas < 6])

    dist = ndimage.distance_transform_edt(region)
    to_nucleus = ndimage.distance_transform_edt(~seeds)
    markers = seeds.astype(np.int32)
    peaks = peak_local_max(
        dist, min_distance=3, threshold_abs=3.0, labels=region.astype(np.int32), exclude_border=False
    )
    k = 2
    for py, px in peaks:
        if to_nucleus[py, px] > 0.5 * dist[py, px] + 1.0 and markers[py, px] == 0:
            markers[py, px] = k
            k += 1
    if k > 2:
        ws = watershed(-dist, markers, mask=region)
        cell = ws == 1
    else:
        cell = region
    cell = ndimage.binary_opening(cell, structure=_disk(2)) | seeds
    cell_labels, n_cell = ndimage.label(cell)
    if n_cell > 1:  # keep the part holding the nucleus
        cell = cell_labels == np.bincount(cell_labels[seeds]).argmax() if seeds.any() else cell
        cell = cell | seeds
    cell = ndimage.binary_fill_holes(cell)
    nucleus = ndimage.binary_fill_holes(seeds & cell)
    return cell, nucleus


def morphology_features(image: np.ndarray | Image.Image) -> np.ndarray:
    """Hand-crafted features of one crop's central white cell (the ``morphology`` encoder).

    After :func:`segment_cell`: size and shape (log area and perimeter of cell and
    nucleus, nucleus-to-cell area ratio, circularity, eccentricity, solidity, number of
    nucleus lobes (maxima of the nucleus's distance transform), raw number of nucleus parts,
    nucleus offset from the cell centre), colour (mean and sd of the background-relative
    optical density per channel, and saturation-weighted hue, saturation and value, in
    nucleus and cytoplasm) and texture (grey-level co-occurrence contrast, homogeneity,
    energy, correlation and entropy of the nucleus and contrast and entropy of the
    cytoplasm, gradient statistics, light spots in the nucleus such as nucleoli, cytoplasm
    granularity by a top-hat filter). Each feature is shifted and scaled by fixed
    constants (no statistic fitted on any data, so nothing leaks between patients); a
    crop without a detectable nucleus gets the all-zero vector (the typical cell), counted
    in the log by the folder embedding.

    Parameters
    ----------
    image
        One crop (any type :func:`to_rgb8` accepts). Sizes are in pixels, so the crops of
        one dataset should share a magnification.

    Returns
    -------
    numpy.ndarray
        float32 vector of length ``len(morphology_feature_names())``.
    """
    from skimage.color import rgb2hsv
    from skimage.morphology import h_maxima

    rgb = to_rgb8(image)
    cell, nucleus = segment_cell(rgb)
    n_feat = len(_MORPH_FEATURES)
    if not nucleus.any():
        return np.zeros(n_feat, np.float32)
    od = _optical_density(rgb)
    cyto = cell & ~nucleus
    c_area, c_perim, c_ecc, c_sol, c_circ, c_centroid = _shape_stats(cell)
    n_area, n_perim, n_ecc, n_sol, n_circ, n_centroid = _shape_stats(nucleus)
    # lobes: maxima of the nucleus's distance transform that stand out by >= 1.5 px
    # (a lobe is wider than the filament or neck joining it to the next one)
    n_dist = ndimage.distance_transform_edt(np.pad(nucleus, 1))[1:-1, 1:-1]
    _, n_lobes = ndimage.label(h_maxima(n_dist, 1.5), structure=np.ones((3, 3)))
    _, n_parts = ndimage.label(nucleus)
    offset = float(np.hypot(*(n_centroid - c_centroid)) / math.sqrt(c_area / math.pi))

    hsv = rgb2hsv(rgb)
    grey = od.mean(axis=-1)
    q = (np.clip(np.floor(grey / _GLCM_OD_MAX * _GLCM_LEVELS), 0, _GLCM_LEVELS - 1) + 1).astype(np.intp)
    n_glcm = _glcm_stats(np.where(nucleus, q, 0))
    c_glcm = _glcm_stats(np.where(cyto, q, 0)) if cyto.any() else (0.0, 1.0, 1.0, 1.0, 0.0)

    total = od.sum(axis=-1)
    grad = np.hypot(ndimage.sobel(total, axis=0), ndimage.sobel(total, axis=1)) / 8.0
    n_inner = ndimage.binary_erosion(nucleus, structure=_disk(1))
    n_inner = n_inner if n_inner.any() else nucleus
    c_inner = ndimage.binary_erosion(cyto, structure=_disk(1))
    light_spots = ndimage.grey_closing(total, footprint=_disk(3)) - total  # black top-hat
    granules = total - ndimage.grey_opening(total, footprint=_disk(1))  # white top-hat
    raw = [
        math.log(c_area),
        math.log(n_area),
        n_area / c_area,
        math.log(c_perim),
        math.log(n_perim),
        c_circ,
        n_circ,
        c_ecc,
        n_ecc,
        c_sol,
        n_sol,
        float(min(n_lobes, 6)),
        float(min(n_parts, 6)),
        offset,
        *_od_stats(od, nucleus),
        *_od_stats(od, cyto),
        *_hsv_stats(hsv, nucleus),
        *_hsv_stats(hsv, cyto),
        *n_glcm,
        c_glcm[0],
        c_glcm[4],
        float(grad[n_inner].mean()),
        float(grad[n_inner].std()),
        float(grad[c_inner].mean()) if c_inner.any() else 0.0,
        float(light_spots[n_inner].mean()),
        float(granules[c_inner].mean()) if c_inner.any() else 0.0,
        float((granules[c_inner] > 0.1).mean()) if c_inner.any() else 0.0,
    ]
    return ((np.asarray(raw, dtype=np.float32) - _MORPH_OFFSET) / _MORPH_SCALE).astype(np.float32)


# --------------------------------------------------------------------------- encoders


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
            len(_MORPH_FEATURES),
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


# --------------------------------------------------------------------------- weights


def _load_weights_file(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """Read a weights file (``torch.load(weights_only=True)`` or safetensors) from a local path."""
    p = Path(path)
    if not p.is_file():
        raise EncoderWeightsError(f"{p}: weights file does not exist (weights are never downloaded)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p), device="cpu")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor objects refused by weights_only
        raise EncoderWeightsError(
            f"{p}: cannot read weights with torch.load(weights_only=True) ({type(exc).__name__}: {exc}); "
            "save a plain state dict of tensors"
        ) from exc
    if not isinstance(obj, Mapping):
        raise EncoderWeightsError(f"{p}: expected a state dict (a mapping), got {type(obj).__name__}")
    return obj


def _unwrap_state_dict(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Take the weights out of a training checkpoint (``teacher``, ``model``, ``state_dict``...)."""
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise EncoderWeightsError(f"no tensors found in the checkpoint (top-level keys: {sorted(obj)[:10]})")
    return state


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if any(k.startswith(prefix) for k in state):
        return {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def convert_dinobloom_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Turn a DinoBloom / DINOv2 checkpoint into a timm ``vit_*_patch14_dinov2`` state dict.

    Accepts the official DinoBloom layout (``{"teacher": {"backbone.cls_token": ...,
    "dino_head.mlp.0.weight": ..., ...}}``), a DINOv2 training checkpoint
    (``{"model": {"teacher.backbone.*": ..., "student.*": ...}}``), a DINOv2 hub state
    dict and a timm state dict. Drops the training heads (``dino_head.*``, ``ibot_head.*``, ``head.*``) and the
    ``mask_token``; strips ``module.`` and ``backbone.`` prefixes; maps DINOv2's chunked
    blocks (``blocks.<chunk>.<i>.``) to ``blocks.<i>.`` and the ViT-g SwiGLU weights
    (``mlp.w12``, ``mlp.w3``) to timm's ``mlp.fc1``, ``mlp.fc2``.

    Parameters
    ----------
    checkpoint
        The loaded checkpoint.

    Returns
    -------
    dict[str, torch.Tensor]
        Keys of timm's DINOv2 vision transformer.
    """
    state = _strip_prefix(_unwrap_state_dict(checkpoint), "module.")
    if any(k.startswith("teacher.") for k in state):  # a DINOv2 training checkpoint: {"model": {"teacher.*", ...}}
        state = {k.removeprefix("teacher."): v for k, v in state.items() if k.startswith("teacher.")}
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(_HEAD_PREFIXES) or key == "mask_token":
            continue
        key = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", key)
        key = re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", key)
        key = re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", key)
        out[key] = value
    return out


def create_dinobloom_model(name: str, *, image_size: int = 224) -> nn.Module:
    """Build a DinoBloom network with random weights (timm, ``pretrained=False``).

    Parameters
    ----------
    name
        ``dinobloom-s``, ``-b``, ``-l`` or ``-g``.
    image_size
        Input side in pixels (a multiple of 14); 224 gives the checkpoints' 257-token
        position embedding (16 x 16 patches + class token).

    Returns
    -------
    torch.nn.Module
        A timm ``VisionTransformer`` with ``num_classes=0`` (output: the normalised class token).
        Built on the current default device (use ``torch.device("meta")`` to only check shapes).
    """
    import timm

    if name not in DINOBLOOM_MODELS:
        raise ValueError(f"unknown DinoBloom model {name!r}; expected one of {list(DINOBLOOM_MODELS)}")
    if image_size % _PATCH:
        raise ValueError(f"{name}: image_size must be a multiple of {_PATCH}, got {image_size}")
    arch, _ = DINOBLOOM_MODELS[name]
    return timm.create_model(arch, pretrained=False, num_classes=0, img_size=image_size)


def load_dinobloom_weights(model: nn.Module, checkpoint: Mapping[str, Any], *, name: str = "dinobloom") -> None:
    """Load a DinoBloom checkpoint into a model from :func:`create_dinobloom_model`, strictly.

    Parameters
    ----------
    model
        The network.
    checkpoint
        The loaded checkpoint (see :func:`convert_dinobloom_state_dict`).
    name
        Used in error messages.

    Raises
    ------
    EncoderWeightsError
        If keys are missing or unexpected, or a shape differs (a position embedding for
        another input size is reported with the ``image_size`` that would match).
    """
    state = convert_dinobloom_state_dict(checkpoint)
    _check_pos_embed(model, state, name=name)
    _load_strict(model, state, name=name)


def _check_pos_embed(model: nn.Module, state: Mapping[str, torch.Tensor], *, name: str) -> None:
    want = getattr(model, "pos_embed", None)
    have = state.get("pos_embed")
    if want is None or have is None or have.ndim != 3 or have.shape[1] == want.shape[1]:
        return  # same number of tokens: any other difference is reported by the strict load
    n_tokens = int(have.shape[1])
    grid = math.isqrt(max(n_tokens - 1, 0))
    hint = f" (a {grid}x{grid} grid + class token: image_size={grid * _PATCH})" if grid * grid == n_tokens - 1 else ""
    raise EncoderWeightsError(
        f"{name}: checkpoint pos_embed has {n_tokens} tokens{hint}, but the model built for this image_size "
        f"expects {int(want.shape[1])}; set image_size to match the checkpoint"
    )


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], *, name: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:5]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:5]})")
        if shapes:
            parts.append(f"{len(shapes)} with another shape (e.g. {shapes[:3]})")
        raise EncoderWeightsError(f"{name}: weights do not match the model: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True, assign=any(p.is_meta for p in model.parameters()))


def _float32(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _has_meta(model: nn.Module) -> bool:
    return any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def _build_and_load(build: Callable[[], nn.Module], state: Mapping[str, torch.Tensor], *, name: str) -> nn.Module:
    """Build a network and load ``state`` strictly, without a costly random initialisation.

    The network is built on the meta device and the checkpoint's tensors are assigned to
    it; a network that keeps tensors outside its state dict (non-persistent buffers) is
    instead built on the CPU and loaded by copy.
    """
    with torch.device("meta"):
        model = build()
    state = _float32(state)
    _check_pos_embed(model, state, name=name)
    _load_strict(model, state, name=name)
    if _has_meta(model):
        model = build()
        _load_strict(model, state, name=name)
    return model


def _create_timm_model(arch: str, image_size: int) -> nn.Module:
    import timm

    try:  # vision transformers take the input size; other families do not accept the argument
        return timm.create_model(arch, pretrained=False, num_classes=0, img_size=image_size)
    except TypeError:
        return timm.create_model(arch, pretrained=False, num_classes=0)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names)


def _timm_output_dim(model: nn.Module, image_size: int) -> int:
    """Width of the pooled pre-logits of a model built on the meta device (shape-only forward)."""
    try:
        with torch.no_grad():
            return int(model(torch.empty(1, 3, image_size, image_size, device="meta")).shape[-1])
    except Exception:  # some ops lack meta kernels: fall back to timm's attributes
        return int(getattr(model, "head_hidden_size", None) or model.num_features)


def encoder_dim(name: str, *, image_size: int = 224) -> int:
    """Embedding width of an encoder, without loading any weights.

    Parameters
    ----------
    name
        An encoder name (see :class:`ImageEmbedParams`).
    image_size
        Input size, used only for ``timm:`` models whose width depends on it.

    Returns
    -------
    int
        384/768/1024/1536 for DinoBloom S/B/L/G, the number of morphology features, or a
        timm model's pooled feature width.
    """
    _check_encoder_name(name)
    if name == "morphology":
        return len(_MORPH_FEATURES)
    if name in DINOBLOOM_MODELS:
        return DINOBLOOM_MODELS[name][1]
    with torch.device("meta"):
        model = _create_timm_model(name.removeprefix("timm:"), image_size)
    return _timm_output_dim(model, image_size)


def load_encoder(params: ImageEmbedParams) -> Encoder:
    """Build the encoder named by ``params.encoder``, with its weights from a local file.

    Parameters
    ----------
    params
        Embedding options.

    Returns
    -------
    Encoder
        Callable on a list of images or a folder.

    Raises
    ------
    EncoderWeightsError
        If a network encoder has no weights path, the file is missing or unreadable, or
        its weights do not match the network (strict loading).
    """
    common = dict(batch_size=params.batch_size, num_workers=params.num_workers, log_every=params.log_every)
    if params.encoder == "morphology":
        return MorphologyEncoder(**common)
    if not params.weights:
        raise EncoderWeightsError(
            f"encoder {params.encoder!r} needs ImageEmbedParams.weights, a local weights file "
            "(nothing is downloaded); use encoder='morphology' to run without weights"
        )
    checkpoint = _load_weights_file(params.weights)
    label = f"{params.encoder} ({params.weights})"
    if params.encoder in DINOBLOOM_MODELS:
        model = _build_and_load(
            lambda: create_dinobloom_model(params.encoder, image_size=params.image_size),
            convert_dinobloom_state_dict(checkpoint),
            name=label,
        )
        dim = DINOBLOOM_MODELS[params.encoder][1]
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        arch = params.encoder.removeprefix("timm:")
        with torch.device("meta"):
            shape_model = _create_timm_model(arch, params.image_size)
        dim = _timm_output_dim(shape_model, params.image_size)
        state = _strip_prefix(_unwrap_state_dict(checkpoint), "module.")
        drop = _classifier_prefixes(shape_model)
        state = {k: v for k, v in state.items() if not (drop and k.startswith(drop))}
        model = _build_and_load(lambda: _create_timm_model(arch, params.image_size), state, name=label)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    logger.info("loaded %s weights from %s", params.encoder, params.weights)
    return TorchEncoder(
        model,
        name=params.encoder,
        dim=dim,
        image_size=params.image_size,
        mean=mean,
        std=std,
        device=params.device,
        **common,
    )


def embed_image_folder(
    folder: str | os.PathLike[str], params: ImageEmbedParams, *, encoder: Encoder | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Embed one patient's folder of crops.

    Parameters
    ----------
    folder
        The patient's folder.
    params
        Embedding options (``strict`` applies here).
    encoder
        A loaded encoder to reuse across patients; None loads ``params.encoder``.

    Returns
    -------
    features
        float32 array (n_crops, d).
    instance_ids
        File names of the embedded crops.

    Raises
    ------
    ImageInputError
        See :meth:`Encoder.embed_folder`.
    """
    enc = encoder if encoder is not None else load_encoder(params)
    return enc.embed_folder(folder, strict=params.strict)


def write_image_bag(
    folder: str | os.PathLike[str],
    bag_path: str | os.PathLike[str],
    *,
    patient: str,
    label: str,
    params: ImageEmbedParams,
    encoder: Encoder | None = None,
    truth: pd.DataFrame | None = None,
) -> int:
    """Embed one patient's folder and write its bag file (see ``docs/method.md``).

    Parameters
    ----------
    folder
        The patient's folder of crops.
    bag_path
        Destination ``.h5`` (written atomically).
    patient, label
        Stored as bag attributes.
    params
        Embedding options.
    encoder
        A loaded encoder to reuse; None loads ``params.encoder``.
    truth
        Simulated data: the patient's per-crop truth indexed by file name
        (:func:`recipe_mil.simulate.image.crop_truth`), stored as
        ``truth_{column}`` datasets; None for real data.

    Returns
    -------
    int
        Number of instances written.
    """
    enc = encoder if encoder is not None else load_encoder(params)
    features, ids = enc.embed_folder(folder, strict=params.strict)
    write_bag(
        bag_path,
        features,
        ids,
        patient=patient,
        label=label,
        encoder=enc.name,
        extra_attrs=(
            {"image_size": int(params.image_size), "weights": Path(params.weights or "").name}
            if enc.name != "morphology"
            else None
        ),
        truth=instance_truth(truth, ids, source=f"{folder} (simulator truth)"),
    )
    return int(features.shape[0])
