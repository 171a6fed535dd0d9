"""The ``morphology`` encoder: segmentation of the central white cell, then size, shape, colour and texture features.

No weights and no statistic fitted on any data: a crop's features depend on that crop alone.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

from recipe_mil.embed.image.reading import to_rgb8

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
