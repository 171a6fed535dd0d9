"""Reading crops: one patient's folder of images, each read as 8-bit RGB whatever its depth and channels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from recipe_mil.io.bags import BagFileError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
"""File suffixes (case-insensitive) read from a patient's folder; other files are ignored."""


class ImageInputError(BagFileError):
    """A patient's image folder or one of its images cannot be used (names the folder or file)."""


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
