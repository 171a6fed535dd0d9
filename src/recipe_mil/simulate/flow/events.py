"""Events of one patient: population phenotypes, spillover, detector signals and the FCS writer."""

from __future__ import annotations

import os
import zlib
from array import array
from collections.abc import Sequence

import numpy as np

from recipe_mil.io.atomic import atomic_path
from recipe_mil.simulate.flow.panel import (
    _ABERRANT_MARKERS,
    _DISEASE_ONLY_PHENOTYPES,
    _INSTRUMENTS,
    _LEVEL_SD,
    _NEGATIVE_LOG,
    _NEGATIVE_MEAN,
    _NEGATIVE_SD,
    _NOISE_SD,
    _POPULATION_LEVELS,
    _POPULATION_SCATTER,
    _SCATTER_CV,
    _SPILL_ENTRIES,
    _SPILL_ORDER,
    DEBRIS,
    MARKERS,
    STATE_SHIFT_DIRECTIONS,
)


def population_phenotype(name: str, shift: float = 0.0) -> tuple[dict[str, float], tuple[float, float]]:
    """Return a population's marker levels and scatter medians, optionally in its shifted sub-state.

    Parameters
    ----------
    name
        A shared population, ``debris`` or a disease-only population ``{class}_only`` (the
        blast phenotype with aberrant markers, see the module doc).
    shift
        ``state_shift_magnitude`` for the shifted sub-state (moved along
        :data:`STATE_SHIFT_DIRECTIONS`), 0 for the baseline.

    Returns
    -------
    levels
        Marker -> log10 median intensity (markers absent are negative).
    scatter
        (FSC, SSC) medians.
    """
    if name in _POPULATION_LEVELS:
        levels, scatter = dict(_POPULATION_LEVELS[name]), list(_POPULATION_SCATTER[name])
    else:
        cls = name.removesuffix("_only")
        aberrant = _DISEASE_ONLY_PHENOTYPES.get(cls)
        if aberrant is None:
            rng = np.random.default_rng(zlib.crc32(f"disease_only:{cls}".encode()))
            aberrant = {str(m): 3.0 for m in rng.choice(_ABERRANT_MARKERS, size=2, replace=False)}
        levels, scatter = {**_POPULATION_LEVELS["blasts"], **aberrant}, list(_POPULATION_SCATTER["blasts"])
    if shift:
        for channel, d in STATE_SHIFT_DIRECTIONS.get(name, {}).items():
            if channel in ("FSC-A", "SSC-A"):
                scatter[1 if channel == "SSC-A" else 0] *= 10 ** (d * shift)
            elif channel in levels or d > 0:
                levels[channel] = levels.get(channel, _NEGATIVE_LOG) + d * shift
    return levels, (scatter[0], scatter[1])


def spillover_matrix(instrument: str) -> tuple[list[str], np.ndarray]:
    """Return the spillover matrix of a simulated instrument.

    Parameters
    ----------
    instrument
        ``"bd"`` or ``"beckman"``.

    Returns
    -------
    detectors
        The instrument's ``$PnN`` of the fluorescence channels, in matrix order.
    matrix
        ``(10, 10)``, row = fluorochrome, column = detector, unit diagonal. ``beckman`` scales
        every off-diagonal entry by a fixed factor in [0.6, 1.4].
    """
    spec = _INSTRUMENTS[instrument]
    detectors = [spec["detectors"][m] for m in _SPILL_ORDER]  # type: ignore[index]
    pos = {m: i for i, m in enumerate(_SPILL_ORDER)}
    s = np.eye(len(_SPILL_ORDER))
    rng = np.random.default_rng(zlib.crc32(instrument.encode()))
    for (src, det), value in _SPILL_ENTRIES.items():
        factor = 1.0 if instrument == "bd" else float(rng.uniform(0.6, 1.4))
        s[pos[src], pos[det]] = value * factor
    return detectors, s


def _channels(instrument: str) -> tuple[list[str], list[str]]:
    """Return $PnN and $PnS of every channel (scatter, markers in MARKERS order, time)."""
    spec = _INSTRUMENTS[instrument]
    fsc, ssc = spec["scatter"]  # type: ignore[misc]
    pnn = [fsc, ssc] + [spec["detectors"][m] for m in MARKERS] + [spec["time"]]  # type: ignore[index]
    pns = ["", ""] + [spec["markers"][m] for m in MARKERS] + [""]  # type: ignore[index]
    return pnn, pns


def _simulate_events(
    rng: np.random.Generator,
    names: Sequence[str],
    pops: np.ndarray,
    codes: np.ndarray,
    shift: np.ndarray,
    spill: np.ndarray,
    magnitude: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (scatter n x 2, detector signals n x 10 in MARKERS order), before saturation.

    ``names[pops[i]]`` is event i's population, ``codes[i]`` its state (1: shifted by
    ``magnitude``); ``shift`` the per-channel gain (scatter, then MARKERS).
    """
    n = pops.size
    true = rng.normal(_NEGATIVE_MEAN, _NEGATIVE_SD, size=(n, len(MARKERS)))
    scatter = np.empty((n, 2))
    for k, name in enumerate(names):
        for state_shift in (0.0, magnitude):
            in_state = (codes == 1) if state_shift else (codes != 1)
            idx = np.flatnonzero((pops == k) & in_state)
            if idx.size == 0:
                continue
            levels, medians = population_phenotype(name, state_shift)
            for j, marker in enumerate(MARKERS):
                level = levels.get(marker)
                if level is not None:
                    true[idx, j] = 10 ** rng.normal(level, _LEVEL_SD, size=idx.size)
            cv = 0.5 if name == DEBRIS else _SCATTER_CV
            for j in range(2):
                scatter[idx, j] = medians[j] * np.exp(rng.normal(0.0, cv, size=idx.size))
    scatter *= shift[:2]
    true *= shift[2:]
    order = [MARKERS.index(m) for m in _SPILL_ORDER]  # spill order -> MARKERS columns
    detected_spill_order = true[:, order] @ spill
    detected = np.empty_like(detected_spill_order)
    detected[:, order] = detected_spill_order
    detected += rng.normal(0.0, _NOISE_SD, size=detected.shape)
    return scatter, detected


def _spill_text(detectors: Sequence[str], matrix: np.ndarray) -> str:
    values = ",".join(f"{v:.6g}" for v in matrix.ravel())
    return f"{len(detectors)},{','.join(detectors)},{values}"


def write_fcs_file(
    path: str | os.PathLike[str],
    events: np.ndarray,
    pnn: Sequence[str],
    pns: Sequence[str] | None = None,
    *,
    keywords: dict[str, str] | None = None,
) -> None:
    """Write float events to an FCS 3.1 file with flowio, atomically.

    Parameters
    ----------
    path
        Destination file.
    events
        Array (n_events x n_channels); stored as float32.
    pnn, pns
        Channel (``$PnN``) and marker (``$PnS``, ``""`` for none) names.
    keywords
        Further TEXT keywords, e.g. ``{"spillover": ...}`` (written ``$SPILLOVER``: flowio adds
        ``$`` to standard keywords only), ``{"p1r": "262144"}``.
    """
    import flowio

    data = array("f")
    data.frombytes(np.ascontiguousarray(events, dtype="<f4").tobytes())
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        flowio.create_fcs(fh, data, list(pnn), opt_channel_names=list(pns) if pns else None, metadata_dict=keywords)
