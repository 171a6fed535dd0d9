"""Rendering one white-cell crop in optical density (Beer-Lambert): shapes, granules, stains."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from recipe_mil.simulate.image.params import (
    CELL_TYPES,
    DISEASE_ONLY_MORPHOLOGIES,
    STATE_SHIFT_DIRECTIONS,
    ImageSimParams,
)

_REFERENCE_SIZE = 96  # geometry below is in pixels of a 96-px crop and scaled with image_size
_BACKGROUND = np.array([0.95, 0.925, 0.90])  # transmitted light of the empty slide (RGB, 0-1)
_BACKGROUND_HAZE = np.array([0.01, 0.03, 0.02])  # faint plasma/eosin tint (OD)
# stain colour vectors (OD per unit concentration, natural log, R G B)
_V_NUCLEUS = np.array([0.80, 1.00, 0.42])  # violet chromatin
_V_RBC = np.array([0.06, 0.45, 0.30])  # salmon-pink erythrocytes
_V_EOS_GRANULE = np.array([0.05, 0.70, 0.95])  # orange-red eosinophil granules
_V_NEUT_GRANULE = np.array([0.14, 0.26, 0.10])  # faint lilac neutrophil granules
_V_AZUROPHILIC = np.array([0.55, 0.95, 0.40])  # coarse purple-red azurophilic granules
_V_AUER = np.array([0.20, 0.85, 0.55])  # red-pink Auer rods
_V_CYTOPLASM = {
    "neutrophil": np.array([0.10, 0.20, 0.10]),
    "lymphocyte": np.array([0.45, 0.22, 0.06]),
    "monocyte": np.array([0.30, 0.26, 0.18]),
    "myeloblast": np.array([0.58, 0.32, 0.08]),
    "eosinophil": np.array([0.10, 0.20, 0.14]),
    "abnormal_promyelocyte": np.array([0.45, 0.30, 0.10]),
    "smudge_cell": np.array([0.10, 0.10, 0.05]),
}
# per type: cell radius (px at 96), cytoplasm concentration, nucleus concentration,
# chromatin texture amplitude and correlation length (px)
_TYPE_GEOMETRY = {
    "neutrophil": dict(radius=19.0, cyto=1.0, nucleus=1.30, texture=0.15, grain=1.2),
    "lymphocyte": dict(radius=14.0, cyto=0.9, nucleus=1.55, texture=0.12, grain=1.2),
    "monocyte": dict(radius=25.0, cyto=0.9, nucleus=0.95, texture=0.28, grain=1.3),
    "myeloblast": dict(radius=22.0, cyto=0.8, nucleus=1.00, texture=0.06, grain=0.8),
    "eosinophil": dict(radius=20.0, cyto=0.8, nucleus=1.25, texture=0.15, grain=1.2),
    "abnormal_promyelocyte": dict(radius=26.0, cyto=0.9, nucleus=0.95, texture=0.08, grain=0.9),
    "smudge_cell": dict(radius=17.0, cyto=0.0, nucleus=0.60, texture=0.45, grain=2.5),
}
_EDGE = 0.7  # soft edge width of every shape (px)
_STAIN_SHIFT_GAIN = np.array([0.25, 0.0, -0.25])  # log OD gain per channel, per unit stain_shift
_STAIN_SHIFT_BACKGROUND = np.array([0.0, -0.03, -0.09])  # log background change per unit stain_shift


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian random field with unit sd and correlation length ``sigma`` (px)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    sd = field.std()
    return field / sd if sd > 0 else field


def _soft(sdf: np.ndarray) -> np.ndarray:
    """Soft inside-indicator of a signed distance (negative inside)."""
    return 1.0 / (1.0 + np.exp(np.clip(sdf / _EDGE, -30, 30)))


def _sdf_circle(x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return np.hypot(x - cx, y - cy) - r


def _sdf_segment(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, half_width: float) -> np.ndarray:
    """Signed distance to a capsule (a thick line segment from ``a`` to ``b``)."""
    ab = b - a
    t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1]) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    return np.hypot(x - a[0] - t * ab[0], y - a[1] - t * ab[1]) - half_width


def _sdf_blob(
    x: np.ndarray, y: np.ndarray, radius: float, rng: np.random.Generator, *, aspect: float, roughness: float
) -> np.ndarray:
    """Signed distance (approximate) to an irregular ellipse-like blob centred at the origin."""
    theta = np.arctan2(y, x)
    rho = np.hypot(x / aspect, y * aspect)
    r = np.full_like(theta, radius)
    for k in range(2, 6):
        r += radius * roughness * rng.normal() / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return rho - r


def _nucleus_sdf(
    cell_type: str,
    u: np.ndarray,
    w: np.ndarray,
    radius: float,
    rng: np.random.Generator,
    shift: dict[str, float] | None = None,
) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Signed distance of the nucleus in the cell's rotated frame, and its nucleoli (u, w, r).

    ``shift``: a shifted sub-state's knobs (``lobes``, ``nucleus_ratio``; see
    :data:`STATE_SHIFT_DIRECTIONS`), already multiplied by the magnitude.
    """
    shift = shift or {}
    nucleoli: list[tuple[float, float, float]] = []
    ratio = float(np.exp(shift.get("nucleus_ratio", 0.0)))
    if cell_type == "neutrophil":
        n_lobes = int(rng.choice([2, 3, 4], p=[0.1, 0.55, 0.35]))
        lobes = shift.get("lobes", 0.0)
        if lobes:  # random rounding: the expected change is ``lobes``
            n_lobes = max(1, n_lobes + int(np.floor(lobes + rng.uniform())))
        lobe_r = radius * rng.uniform(0.29, 0.33) * (1.0 if n_lobes < 4 else 0.88)
        arc_r = radius * rng.uniform(0.50, 0.62)
        # lobes on a C-shaped arc, neighbours separated by a gap of about 2 px
        step = 2 * np.arcsin(min(0.99, (2 * lobe_r + 2.2) / (2 * arc_r))) * rng.uniform(1.0, 1.08)
        start = -0.5 * step * (n_lobes - 1)
        centres = [
            np.array([arc_r * np.cos(start + j * step), arc_r * np.sin(start + j * step)]) for j in range(n_lobes)
        ]
        middle = np.mean(centres, axis=0)
        centres = [c - middle for c in centres]
        sdf = np.min([_sdf_circle(u, w, c[0], c[1], lobe_r * rng.uniform(0.9, 1.1)) for c in centres], axis=0)
        for a, b in zip(centres[:-1], centres[1:], strict=True):
            sdf = np.minimum(sdf, _sdf_segment(u, w, a, b, rng.uniform(0.5, 0.8)))
        return sdf, nucleoli
    if cell_type == "eosinophil":
        lobe_r = radius * rng.uniform(0.30, 0.35)
        half = lobe_r + rng.uniform(1.2, 2.5)
        a, b = np.array([-half, radius * 0.1]), np.array([half, radius * 0.1])
        sdf = np.minimum(
            _sdf_circle(u, w, a[0], a[1], lobe_r * rng.uniform(0.92, 1.08)),
            _sdf_circle(u, w, b[0], b[1], lobe_r * rng.uniform(0.92, 1.08)),
        )
        return np.minimum(sdf, _sdf_segment(u, w, a, b, rng.uniform(0.5, 0.8))), nucleoli
    if cell_type == "lymphocyte":
        r = min(radius * rng.uniform(0.78, 0.86) * ratio, 0.95 * radius)
        du = radius * rng.uniform(0.0, 0.12)
        return _sdf_blob(u - du, w, r, rng, aspect=rng.uniform(1.0, 1.08), roughness=0.02), nucleoli
    if cell_type == "monocyte":
        a_ax, b_ax = radius * rng.uniform(0.58, 0.66), radius * rng.uniform(0.42, 0.50)
        body = (np.hypot(u / a_ax, w / b_ax) - 1.0) * min(a_ax, b_ax)
        notch_r = radius * rng.uniform(0.26, 0.34)
        notch = _sdf_circle(u, w, 0.0, b_ax + notch_r * rng.uniform(0.25, 0.5), notch_r)
        return np.maximum(body, -notch), nucleoli
    if cell_type == "myeloblast":
        r = min(radius * rng.uniform(0.74, 0.82) * ratio, 0.95 * radius)
        sdf = _sdf_blob(u, w, r, rng, aspect=rng.uniform(1.0, 1.12), roughness=0.02)
        for _ in range(int(rng.integers(1, 4))):
            rr = r * np.sqrt(rng.uniform(0.0, 0.35))
            phi = rng.uniform(0, 2 * np.pi)
            nucleoli.append((rr * np.cos(phi), rr * np.sin(phi), radius * rng.uniform(0.09, 0.13)))
        return sdf, nucleoli
    if cell_type == "abnormal_promyelocyte":
        r = radius * rng.uniform(0.52, 0.60)
        off = radius - r * rng.uniform(1.05, 1.25)  # eccentric
        sdf = _sdf_blob(u - off, w, r, rng, aspect=rng.uniform(1.05, 1.2), roughness=0.03)
        nucleoli.append((off, 0.0, radius * rng.uniform(0.08, 0.11)))
        return sdf, nucleoli
    if cell_type == "smudge_cell":
        return _sdf_blob(u, w, radius * 0.95, rng, aspect=rng.uniform(1.1, 1.5), roughness=0.15), nucleoli
    raise ValueError(f"unknown cell type {cell_type!r}; expected one of {[*CELL_TYPES, *DISEASE_ONLY_MORPHOLOGIES]}")


def _granules(
    rng: np.random.Generator, region: np.ndarray, density: float, sigma: float, amplitude: float
) -> np.ndarray:
    """Concentration map of small granules scattered over ``region`` (soft mask)."""
    n = rng.poisson(density * float(region.sum()))
    out = np.zeros(region.shape)
    if n == 0:
        return out
    h, w = region.shape
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    keep = rng.uniform(size=n) < region[ys, xs]
    np.add.at(out, (ys[keep], xs[keep]), 1.0)
    return ndimage.gaussian_filter(out, sigma) * amplitude * 2 * np.pi * sigma**2


@dataclass
class _Look:
    """A patient's (or cohort's) stain and size factors."""

    stain_gain: np.ndarray  # (3,) per-channel log OD gain
    stain_strength: np.ndarray  # (4,) log factors: nucleus, cytoplasm, granules, rbc
    background: np.ndarray  # (3,) transmitted light of the slide
    size: float  # size factor


def _patient_look(params: ImageSimParams, rng: np.random.Generator) -> _Look:
    gain = params.stain_shift * _STAIN_SHIFT_GAIN + rng.normal(0.0, params.patient_stain_sd, 3)
    background = _BACKGROUND * np.exp(params.stain_shift * _STAIN_SHIFT_BACKGROUND + rng.normal(0.0, 0.01, 3))
    return _Look(
        stain_gain=gain,
        stain_strength=rng.normal(0.0, params.patient_stain_sd, 4),
        background=np.clip(background, 0.5, 1.0),
        size=float(np.exp(rng.normal(0.0, params.patient_size_sd))),
    )


def render_cell(
    cell_type: str,
    rng: np.random.Generator,
    *,
    image_size: int = 96,
    size_jitter: float = 0.08,
    stain_jitter: float = 0.05,
    rbc_mean: float = 2.5,
    noise_sd: float = 2.0,
    stain_shift: float = 0.0,
    state_shift: float = 0.0,
) -> np.ndarray:
    """Render one single-cell crop (no patient-level stain or size factor).

    Parameters
    ----------
    cell_type
        One of :data:`CELL_TYPES` or :data:`DISEASE_ONLY_MORPHOLOGIES`.
    rng
        Random generator (consumed).
    image_size
        Side of the square crop (px).
    size_jitter, stain_jitter, rbc_mean, noise_sd, stain_shift
        As in :class:`ImageSimParams`.
    state_shift
        0: the baseline look; otherwise the shifted sub-state with this magnitude (see
        :data:`STATE_SHIFT_DIRECTIONS`).

    Returns
    -------
    numpy.ndarray
        uint8 array of shape (image_size, image_size, 3), RGB.
    """
    look = _Look(
        stain_gain=stain_shift * _STAIN_SHIFT_GAIN,
        stain_strength=np.zeros(4),
        background=_BACKGROUND * np.exp(stain_shift * _STAIN_SHIFT_BACKGROUND),
        size=1.0,
    )
    return _render_cell(
        cell_type,
        rng,
        look=look,
        image_size=image_size,
        size_jitter=size_jitter,
        stain_jitter=stain_jitter,
        rbc_mean=rbc_mean,
        noise_sd=noise_sd,
        state_shift=state_shift,
    )


def _render_cell(
    cell_type: str,
    rng: np.random.Generator,
    *,
    look: _Look,
    image_size: int,
    size_jitter: float,
    stain_jitter: float,
    rbc_mean: float,
    noise_sd: float,
    state_shift: float = 0.0,
) -> np.ndarray:
    """Render one crop with a patient's stain and size factors (see :func:`render_cell`).

    ``state_shift``: the magnitude of the shifted sub-state (0: baseline), applied along
    :data:`STATE_SHIFT_DIRECTIONS`.
    """
    if cell_type not in _TYPE_GEOMETRY:
        raise ValueError(
            f"unknown cell type {cell_type!r}; expected one of {[*CELL_TYPES, *DISEASE_ONLY_MORPHOLOGIES]}"
        )
    geo = _TYPE_GEOMETRY[cell_type]
    knobs = {k: d * state_shift for k, d in STATE_SHIFT_DIRECTIONS.get(cell_type, {}).items()} if state_shift else {}
    s = image_size
    scale = s / _REFERENCE_SIZE
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    cx = (s - 1) / 2 + rng.normal(0.0, 1.5 * scale)
    cy = (s - 1) / 2 + rng.normal(0.0, 1.5 * scale)
    x, y = xx - cx, yy - cy
    theta = rng.uniform(0.0, 2 * np.pi)
    u = np.cos(theta) * x + np.sin(theta) * y
    w = -np.sin(theta) * x + np.cos(theta) * y
    radius = geo["radius"] * scale * look.size * float(np.exp(rng.normal(0.0, size_jitter) + knobs.get("size", 0.0)))

    roughness = 0.05 if cell_type == "monocyte" else 0.025
    cell = _soft(_sdf_blob(u, w, radius, rng, aspect=rng.uniform(1.0, 1.1), roughness=roughness))
    nuc_sdf, nucleoli = _nucleus_sdf(cell_type, u, w, radius, rng, knobs)
    nucleus = _soft(nuc_sdf) * cell
    chromatin = 1.0 + geo["texture"] * _smooth_noise(rng, (s, s), geo["grain"] * scale)
    nuc_conc = geo["nucleus"] * nucleus * np.clip(chromatin, 0.3, None)
    for nu, nw, nr in nucleoli:
        nuc_conc *= 1.0 - 0.55 * _soft(_sdf_circle(u, w, nu, nw, nr))
    cytoplasm = np.clip(cell - nucleus, 0.0, 1.0)

    jit = np.exp(look.stain_strength + rng.normal(0.0, stain_jitter, 4))
    od = nuc_conc[..., None] * _V_NUCLEUS * jit[0]
    basophilia = float(np.exp(knobs.get("basophilia", 0.0)))
    cyto_conc = geo["cyto"] * basophilia * cytoplasm * (1.0 + 0.08 * _smooth_noise(rng, (s, s), 2.0 * scale))
    od = od + cyto_conc[..., None] * _V_CYTOPLASM[cell_type] * jit[1]
    granules = float(np.exp(knobs.get("granules", 0.0)))
    if cell_type == "eosinophil":
        gran = _granules(rng, cytoplasm, granules * 0.45 / scale**2, 0.8 * scale, 0.55) + 0.25 * granules * cytoplasm
        od = od + gran[..., None] * _V_EOS_GRANULE * jit[2]
    elif cell_type == "neutrophil":
        gran = _granules(rng, cytoplasm, granules * 0.10 / scale**2, 0.6 * scale, 0.35)
        od = od + gran[..., None] * _V_NEUT_GRANULE * jit[2]
    elif cell_type == "abnormal_promyelocyte":
        gran = _granules(rng, np.clip(cell - 0.5 * nucleus, 0.0, 1.0), 0.35 / scale**2, 0.9 * scale, 0.6)
        od = od + gran[..., None] * _V_AZUROPHILIC * jit[2]
        for _ in range(int(rng.integers(0, 4))):  # Auer rods: thin needles in the cytoplasm
            phi, rr = rng.uniform(0, 2 * np.pi), radius * rng.uniform(0.3, 0.6)
            centre = np.array([-rr * np.cos(phi), rr * np.sin(phi)])
            half = radius * rng.uniform(0.15, 0.3) * np.array([np.cos(phi + 1.3), np.sin(phi + 1.3)])
            rod = _soft(_sdf_segment(u, w, centre - half, centre + half, 0.7 * scale)) * cytoplasm
            od = od + 0.9 * rod[..., None] * _V_AUER * jit[2]
    n_vacuoles = {"monocyte": 3.0}.get(cell_type, 0.5 if "vacuoles" in knobs else 0.0)
    for _ in range(int(rng.poisson(n_vacuoles * np.exp(knobs.get("vacuoles", 0.0))))):
        rr, phi = radius * rng.uniform(0.55, 0.85), rng.uniform(0, 2 * np.pi)
        vac = _soft(_sdf_circle(u, w, rr * np.cos(phi), rr * np.sin(phi), rng.uniform(1.2, 2.2) * scale))
        od = od * (1.0 - 0.6 * (vac * cytoplasm)[..., None])

    rbc = np.zeros((s, s))
    for _ in range(int(rng.poisson(rbc_mean))):
        r_rbc = 12.0 * scale * look.size * float(np.exp(rng.normal(0.0, 0.06)))
        dist = radius + r_rbc * rng.uniform(0.75, 1.8)
        phi = rng.uniform(0, 2 * np.pi)
        bx, by = dist * np.cos(phi), dist * np.sin(phi)
        d = np.hypot(x - bx, y - by)
        pallor = 1.0 - 0.45 * np.exp(-0.5 * (d / (0.45 * r_rbc)) ** 2)
        rbc = np.maximum(rbc, _soft(d - r_rbc) * pallor)
    rbc = rbc * (1.0 - cell)  # the white cell lies on top
    od = od + 0.85 * rbc[..., None] * _V_RBC * jit[3]
    od = od * np.exp(look.stain_gain) + _BACKGROUND_HAZE

    rgb = look.background * np.exp(-od) * 255.0
    rgb = ndimage.gaussian_filter(rgb, sigma=(0.5 * scale, 0.5 * scale, 0.0))
    if noise_sd > 0:
        rgb = rgb + rng.normal(0.0, noise_sd, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
