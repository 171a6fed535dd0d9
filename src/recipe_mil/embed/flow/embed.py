"""Embedding one FCS file: QC, compensation, transform and scaling of the chosen channels; bags; PCA.

For every file (see :func:`embed_flow_events`):

1. **Read** (:func:`~recipe_mil.embed.flow.fcs.read_fcs`) and map every feature to one channel
   (:func:`~recipe_mil.embed.flow.panel.channel_mapping`); a feature whose values never decrease over
   the acquisition is an event counter and fails the file.
2. **Event QC** on the uncompensated, untransformed values of the channels used (the features and
   the compensation channels that enter them; nothing else): drop events with a non-finite value,
   saturated events (value >= ``$PnR - 1``), optionally events outside the kept fraction of the
   acquisition time and events below a scatter threshold; then subsample to ``max_events``
   (seeded). Instance ids are event indices in the original file.
3. **Compensate** (:func:`~recipe_mil.embed.flow.compensation.resolve_compensation`).
4. **Transform** fluorescence channels with logicle (flowkit) or ``asinh(x / cofactor)``; scatter
   channels are linear, divided by their top of scale.
5. **Scale** (``standardize``): by default a *fixed* per-channel affine map that sends the
   instrument's range ``[0, top]`` (on the transformed scale) to ``[-2, 2]``. It uses no statistic
   of any data set, so no information crosses patients or folds (leakage-safe), and the same cell
   lands at the same place in every patient's bag. Per-file z-scores (``"file"``, removes
   between-patient shifts, including real ones) or given statistics (``"given"``, e.g. fitted on
   training patients only) are options. An optional :class:`FlowPCA` (fitted by the caller,
   e.g. on training files with :func:`fit_flow_pca`) projects the result.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recipe_mil.config import check_values
from recipe_mil.embed.flow.compensation import COMPENSATION_MODES, resolve_compensation
from recipe_mil.embed.flow.errors import fail
from recipe_mil.embed.flow.fcs import FcsHeader, read_fcs
from recipe_mil.embed.flow.kinds import never_decreasing
from recipe_mil.embed.flow.panel import PanelSpec, channel_mapping, parse_panel
from recipe_mil.io.bags import instance_truth, write_bag
from recipe_mil.seeds import derive_seed

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16  # rows per QC chunk
_FIXED_LOW, _FIXED_HIGH = -2.0, 2.0  # the fixed scaling sends [0, top] (transformed) to this interval


@dataclass
class FlowPCA:
    """A PCA projection of the scaled features, fitted by the caller (e.g. on training files).

    Attributes
    ----------
    features
        Feature names, in order.
    mean
        Feature means, shape (d,).
    components
        Principal axes, shape (k, d).
    """

    features: list[str]
    mean: np.ndarray
    components: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Project ``x`` (n x d) onto the components (n x k)."""
        return (x - self.mean) @ self.components.T

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to an ``.npz`` file (atomically)."""
        from recipe_mil.io.atomic import atomic_path

        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, features=np.array(self.features), mean=self.mean, components=self.components)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FlowPCA:
        """Read from an ``.npz`` file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            return cls([str(f) for f in z["features"]], z["mean"].copy(), z["components"].copy())


@dataclass
class FlowEmbedParams:
    """Options of the flow-cytometry embedding.

    Attributes
    ----------
    compensation
        ``"file"`` (the file's ``$SPILLOVER``/``$SPILL``/``SPILL``; a warning and no
        compensation when the file has none, or a keyword without coefficients),
        ``"file_strict"`` (the same, but those files fail), ``"none"``, or the path of a CSV
        spillover matrix whose header names the channels (``$PnN``).
    transform
        ``"logicle"`` (flowkit's logicle, parameters ``logicle_*``) or ``"asinh"``
        (``asinh(x / cofactor)``), for fluorescence channels; scatter is linear.
    cofactor
        The asinh cofactor (150 is usual for flow, 5 for mass cytometry).
    logicle_t
        Logicle top of scale T. None: each channel's top from ``$PnR`` (and gain).
    logicle_w, logicle_m, logicle_a
        Logicle width (linear decades), decades and extra negative decades.
    max_events
        Events kept per file after QC (seeded subsample without replacement); None keeps all.
    seed
        Base seed of the subsample (combined with the file name, see :func:`embed_flow_events`).
    drop_saturated
        Drop events at or above ``$PnR - 1`` on any channel used (a feature, or a compensation
        channel that enters a feature); other channels (a width, say) are not looked at.
    fsc_min, ssc_min
        Drop events below these values (uncompensated scatter units); None: no threshold.
    fsc_min_quantile, ssc_min_quantile
        Drop events below this quantile of the file's (QC-passing) scatter; 0: none.
        Combined with ``fsc_min``/``ssc_min`` by taking the higher threshold.
    time_trim
        Fractions of the acquisition time span dropped at the start and at the end (needs a
        time channel; ignored with a warning without one).
    panel
        Markers with aliases, see :func:`parse_panel`; None: features resolved from the files.
    standardize
        ``"fixed"`` (default): per channel, an affine map sending the transformed value of 0
        to -2 and that of the top of scale to +2 (scatter: ``x / top`` in [0, 1]; logicle:
        ``[logicle(0), 1]``; asinh: ``[0, asinh(top / cofactor)]``); no data statistic is
        used, so nothing leaks between patients or folds and a cell type lands at the same
        place in every bag. ``"file"``: z-score each feature
        within the file (after QC and subsampling). ``"given"``: ``(y - mean) / sd`` with
        ``feature_stats[name] = (mean, sd)`` on the transformed scale. ``"none"``: the
        transformed values.
    feature_stats
        Statistics for ``standardize="given"``.
    pca
        A :class:`FlowPCA` (or its ``.npz`` path) applied after scaling; None: no PCA.
    """

    compensation: str = "file"
    transform: Literal["logicle", "asinh"] = "logicle"
    cofactor: float = 150.0
    logicle_t: float | None = None
    logicle_w: float = 0.5
    logicle_m: float = 4.5
    logicle_a: float = 0.0
    max_events: int | None = 2000
    seed: int = 0
    drop_saturated: bool = True
    fsc_min: float | None = None
    ssc_min: float | None = None
    fsc_min_quantile: float = 0.0
    ssc_min_quantile: float = 0.0
    time_trim: tuple[float, float] = (0.0, 0.0)
    panel: PanelSpec | None = None
    standardize: Literal["fixed", "file", "given", "none"] = "fixed"
    feature_stats: Mapping[str, tuple[float, float]] | None = None
    pca: FlowPCA | str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        self.compensation = str(self.compensation)
        self.time_trim = (float(self.time_trim[0]), float(self.time_trim[1]))
        checks = {
            "transform": self.transform in ("logicle", "asinh"),
            "standardize": self.standardize in ("fixed", "file", "given", "none"),
            "cofactor": self.cofactor > 0,
            "logicle_t": self.logicle_t is None or self.logicle_t > 0,
            "logicle_w": 0 <= self.logicle_w <= self.logicle_m / 2,
            "logicle_m": self.logicle_m > 0,
            "logicle_a": self.logicle_a >= 0,
            "max_events": self.max_events is None or self.max_events >= 1,
            "fsc_min_quantile": 0 <= self.fsc_min_quantile < 1,
            "ssc_min_quantile": 0 <= self.ssc_min_quantile < 1,
            "time_trim": min(self.time_trim) >= 0 and sum(self.time_trim) < 1,
            "feature_stats": self.standardize != "given" or self.feature_stats is not None,
        }
        check_values(self, checks)
        if self.compensation not in COMPENSATION_MODES and not Path(self.compensation).is_file():
            raise ValueError(
                "FlowEmbedParams: compensation must be 'file', 'file_strict', 'none' or an existing CSV file, "
                f"got {self.compensation!r}"
            )
        if self.panel is not None:
            self.panel = parse_panel(self.panel)

    @property
    def encoder(self) -> str:
        """The bags' encoder name, ``flow-<transform>``."""
        return f"flow-{self.transform}"


@dataclass
class FlowEmbedding:
    """One file's embedding and how it was made.

    Attributes
    ----------
    features
        Float32 array (n_kept x d), d = ``len(feature_names)`` or the PCA's components.
    event_ids
        Int64 indices of the kept events in the original file (sorted).
    feature_names
        Names of the columns (before PCA).
    channels
        Feature -> ``$PnN`` of the channel used.
    n_events
        Events in the file.
    qc
        Events dropped by each QC step, and kept.
    compensation
        Where the compensation came from (``"$SPILLOVER"``, a file path, ``"none"``, or
        ``"none (...)"`` saying why the file was not compensated).
    data_set, n_data_sets
        The data set read (1-based) and how many the file holds.
    """

    features: np.ndarray
    event_ids: np.ndarray
    feature_names: list[str]
    channels: dict[str, str]
    n_events: int
    qc: dict[str, int]
    compensation: str
    data_set: int = 1
    n_data_sets: int = 1


def _scatter_channel(header: FcsHeader, letter: str) -> int | None:
    cands = [i for i, (n, k) in enumerate(zip(header.pnn, header.kinds, strict=True)) if k == "scatter"]
    cands = [i for i in cands if header.pnn[i].strip().lower().startswith(letter)]
    area = [i for i in cands if header.measures[i] in ("area", "")]
    return (area or cands or [None])[0]


def _event_qc(
    header: FcsHeader, events: np.ndarray, used: Sequence[int], params: FlowEmbedParams
) -> tuple[np.ndarray, dict[str, int]]:
    """Return the indices of the events passing QC (before subsampling) and the counts dropped by each step."""
    qc: dict[str, int] = {}
    cols = sorted(set(used))
    n = events.shape[0]
    keep = np.empty(n, dtype=bool)
    sat = np.zeros(n, dtype=bool)
    thresholds = header.saturation[cols]
    for start in range(0, n, _CHUNK):  # row chunks: cache-friendly, no full-size copy
        sub = events[start : start + _CHUNK, cols]
        finite = np.isfinite(sub).all(axis=1)
        keep[start : start + _CHUNK] = finite
        if params.drop_saturated:
            with np.errstate(invalid="ignore"):
                sat[start : start + _CHUNK] = (sub >= thresholds).any(axis=1) & finite
    qc["non_finite"] = int(n - keep.sum())
    if params.drop_saturated:
        qc["saturated"] = int(sat.sum())
        keep &= ~sat
    t_idx = next((i for i, k in enumerate(header.kinds) if k == "time"), None)
    if any(params.time_trim):
        if t_idx is None:
            logger.warning(
                "%s: time_trim=%s but the file has no time channel; not applied", header.path, params.time_trim
            )
        else:
            t = events[:, t_idx]
            ok = keep & np.isfinite(t)
            if ok.any():
                t0, t1 = float(t[ok].min()), float(t[ok].max())
                lo = t0 + params.time_trim[0] * (t1 - t0)
                hi = t1 - params.time_trim[1] * (t1 - t0)
                with np.errstate(invalid="ignore"):
                    out = keep & ~((t >= lo) & (t <= hi))
                qc["time"] = int(out.sum())
                keep &= ~out
    for letter, value, q in (
        ("f", params.fsc_min, params.fsc_min_quantile),
        ("s", params.ssc_min, params.ssc_min_quantile),
    ):
        if value is None and q <= 0:
            continue
        idx = _scatter_channel(header, letter)
        name = "FSC" if letter == "f" else "SSC"
        if idx is None:
            raise fail(header.path, f"a {name} gate is set but the file has no {name} channel ($PnN: {header.pnn})")
        x = events[:, idx]
        ok = keep & np.isfinite(x)
        thr = -np.inf if value is None else float(value)
        if q > 0 and ok.any():
            thr = max(thr, float(np.quantile(x[ok], q)))
        with np.errstate(invalid="ignore"):
            out = keep & ~(x >= thr)
        qc[f"{name.lower()}_gate"] = int(out.sum())
        keep &= ~out
    kept = np.flatnonzero(keep)
    qc["kept"] = int(kept.size)
    logger.info(
        "%s: QC kept %d of %d events (%s)",
        header.path,
        kept.size,
        events.shape[0],
        ", ".join(f"{k} {v}" for k, v in qc.items() if k != "kept"),
    )
    if kept.size == 0:
        detail = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in qc.items() if k != "kept")
        raise fail(header.path, f"no event left after QC ({detail}, of {events.shape[0]} events)")
    return kept, qc


def _logicle(x: np.ndarray, top: float, params: FlowEmbedParams) -> np.ndarray:
    import flowkit as fk

    t = params.logicle_t if params.logicle_t is not None else top
    xf = fk.transforms.LogicleTransform(t, params.logicle_w, params.logicle_m, params.logicle_a)
    return np.asarray(xf.apply(x.reshape(-1, 1)), dtype=np.float64).ravel()


def _transform(
    header: FcsHeader, out: np.ndarray, chans: Sequence[int], params: FlowEmbedParams
) -> tuple[np.ndarray, np.ndarray]:
    """Transform each column in place; return the transformed values of 0 and of the top of scale."""
    lo = np.zeros(len(chans))
    hi = np.ones(len(chans))
    for j, c in enumerate(chans):
        top = float(header.tops[c])
        col = out[:, j]  # a view (contiguous in a Fortran-ordered array)
        if header.kinds[c] == "scatter":
            col /= top
        elif params.transform == "logicle":
            col[:] = _logicle(col, top, params)
            t = params.logicle_t if params.logicle_t is not None else top
            lo[j], hi[j] = _logicle(np.array([0.0, t]), t, params)
        else:
            col /= params.cofactor
            np.arcsinh(col, out=col)
            hi[j] = math.asinh(top / params.cofactor)
    return lo, hi


def _standardize(
    y: np.ndarray, lo: np.ndarray, hi: np.ndarray, names: list[str], params: FlowEmbedParams
) -> np.ndarray:
    if params.standardize == "fixed":
        centre = (lo + hi) / 2
        half = (hi - lo) / (_FIXED_HIGH - _FIXED_LOW)
        y -= centre
        y /= half
        return y
    if params.standardize == "file":
        sd = y.std(axis=0) if y.shape[0] > 1 else np.ones(y.shape[1])
        sd[~(sd > 0)] = 1.0
        return (y - y.mean(axis=0)) / sd
    if params.standardize == "given":
        stats = {k.lower(): v for k, v in (params.feature_stats or {}).items()}
        missing = [n for n in names if n.lower() not in stats]
        if missing:
            raise ValueError(f"feature_stats has no entry for feature(s) {missing}")
        mean = np.array([stats[n.lower()][0] for n in names], dtype=np.float64)
        sd = np.array([stats[n.lower()][1] for n in names], dtype=np.float64)
        sd[~(sd > 0)] = 1.0
        return (y - mean) / sd
    return y


def embed_flow_events(
    path: str | os.PathLike[str],
    params: FlowEmbedParams,
    *,
    features: Sequence[str],
    seed_key: str | None = None,
    dataset: int | None = None,
) -> FlowEmbedding:
    """Embed the events of one FCS file and report how.

    Read, match ``features`` to channels, QC (non-finite, saturated, time, scatter gate) on the
    raw values, subsample to ``params.max_events`` (seed ``derive_seed(params.seed,
    "flow-subsample", seed_key or file name)``), compensate, transform and scale (see
    :class:`FlowEmbedParams`; by default a fixed per-channel scaling, no data statistic).

    Parameters
    ----------
    path
        The FCS file.
    params
        Embedding options.
    features
        Feature names, e.g. from :func:`~recipe_mil.embed.flow.panel.resolve_panel`, in the order wanted.
    seed_key
        Identifies the file in the subsample's seed; default the file name.
    dataset
        The data set to read, for files holding several (see
        :func:`~recipe_mil.embed.flow.fcs.read_fcs_header`).

    Returns
    -------
    FlowEmbedding
        Features, original event indices and the QC report.

    Raises
    ------
    FlowFileError
        If the file is unreadable or inconsistent, lacks a feature, or no event passes QC.
    """
    if not features:
        raise ValueError("embed_flow_file: no features given")
    header, events = read_fcs(path, dataset)
    mapping = channel_mapping(header, features, panel=params.panel)
    chans = [mapping[f] for f in features]
    counters = [f"{f!r} ({header.label(c)})" for f, c in mapping.items() if never_decreasing(events[:, c])]
    if counters:
        raise fail(
            header.path,
            f"feature(s) {', '.join(counters)} never decrease over the {header.n_events} events: an event counter or "
            "clock, not a marker; leave it out of the panel",
        )
    comp, comp_source = resolve_compensation(header, params.compensation)
    used = list(chans) + (comp.feeding(chans) if comp is not None else [])
    kept, qc = _event_qc(header, events, used, params)
    if params.max_events is not None and kept.size > params.max_events:
        rng = np.random.default_rng(derive_seed(params.seed, "flow-subsample", seed_key or header.path.name))
        kept = np.sort(rng.choice(kept, size=params.max_events, replace=False))
    qc["subsampled"] = int(kept.size)
    rows = events if kept.size == events.shape[0] else events[kept]
    del events
    compensated, pos = None, {}
    if comp is not None:
        compensated = rows[:, comp.channels] @ comp.inverse
        pos = {c: j for j, c in enumerate(comp.channels)}
    values = np.empty((kept.size, len(chans)), dtype=np.float64, order="F")  # contiguous columns
    for j, c in enumerate(chans):
        values[:, j] = compensated[:, pos[c]] if c in pos else rows[:, c]  # type: ignore[index]
    del rows, compensated
    lo, hi = _transform(header, values, chans, params)
    z = _standardize(values, lo, hi, list(features), params)
    if params.pca is not None:
        pca = params.pca if isinstance(params.pca, FlowPCA) else FlowPCA.load(params.pca)
        if [f.lower() for f in pca.features] != [f.lower() for f in features]:
            raise ValueError(f"the PCA was fitted on features {pca.features}, not {list(features)}")
        z = pca.transform(z)
    return FlowEmbedding(
        features=np.ascontiguousarray(z, dtype=np.float32),
        event_ids=kept.astype(np.int64),
        feature_names=list(features),
        channels={f: header.pnn[mapping[f]] for f in features},
        n_events=header.n_events,
        qc=qc,
        compensation=comp_source,
        data_set=header.data_set,
        n_data_sets=header.n_data_sets,
    )


def embed_flow_file(
    path: str | os.PathLike[str], params: FlowEmbedParams, **options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Return :func:`embed_flow_events`'s features and event indices only (same parameters and errors)."""
    emb = embed_flow_events(path, params, **options)
    return emb.features, emb.event_ids


def write_flow_bag(
    fcs_path: str | os.PathLike[str],
    bag_path: str | os.PathLike[str],
    *,
    patient: str,
    label: str,
    params: FlowEmbedParams,
    features: list[str],
    dataset: int | None = None,
    truth: pd.DataFrame | None = None,
) -> None:
    """Embed one FCS file (:func:`embed_flow_events`) and write its bag with :func:`~recipe_mil.io.bags.write_bag`.

    ``patient`` also seeds the subsample, ``features`` are the same for every patient and ``dataset`` is the
    sample sheet's; the encoder is ``flow-<transform>``. ``truth`` is the file's per-event truth of simulated
    data (:func:`recipe_mil.simulate.flow.event_truth`, see :func:`~recipe_mil.io.bags.instance_truth`), None
    for real data.

    Raises
    ------
    FlowFileError
        As :func:`embed_flow_events`.
    """
    emb = embed_flow_events(fcs_path, params, features=features, seed_key=str(patient), dataset=dataset)
    ids = [str(i) for i in emb.event_ids]
    write_bag(
        bag_path,
        emb.features,
        ids,
        patient=patient,
        label=label,
        encoder=params.encoder,
        extra_attrs={
            "feature_names": json.dumps(emb.feature_names),
            "channels": json.dumps(emb.channels),
            "compensation": emb.compensation,
            "standardize": params.standardize,
            "n_events_file": emb.n_events,
            "qc": json.dumps(emb.qc),
            "source_file": str(fcs_path),
            "data_set": emb.data_set,
            "n_data_sets": emb.n_data_sets,
        },
        truth=instance_truth(truth, ids, source=f"{fcs_path} (simulator truth)"),
    )
    logger.info("%s: wrote %d events x %d features to %s", fcs_path, *emb.features.shape, bag_path)


def fit_flow_pca(
    paths: Sequence[str | os.PathLike[str]],
    params: FlowEmbedParams,
    *,
    features: list[str],
    n_components: int,
    events_per_file: int = 2000,
    datasets: Sequence[int | None] | None = None,
) -> FlowPCA:
    """Fit a PCA on scaled events of some files (fit on training patients only to avoid leakage).

    Parameters
    ----------
    paths
        FCS files to fit on.
    params
        Embedding options (``params.pca`` is ignored; ``max_events`` is replaced by
        ``events_per_file``).
    features
        Feature names.
    n_components
        Number of components (at most the number of features).
    events_per_file
        Events drawn per file (seeded), so that each file weighs the same.
    datasets
        Per file, the data set to read (files holding several); None: each file's default.

    Returns
    -------
    FlowPCA
        To set as ``params.pca``.
    """
    from dataclasses import replace

    if not 1 <= n_components <= len(features):
        raise ValueError(f"n_components must be in [1, {len(features)}], got {n_components}")
    sub = replace(params, pca=None, max_events=events_per_file)
    sets = list(datasets) if datasets is not None else [None] * len(paths)
    x = np.concatenate(
        [embed_flow_file(p, sub, features=features, dataset=ds)[0] for p, ds in zip(paths, sets, strict=True)]
    ).astype(np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    logger.info("PCA fitted on %d events of %d files: %d components", x.shape[0], len(paths), n_components)
    return FlowPCA(list(features), mean, vt[:n_components].copy())
