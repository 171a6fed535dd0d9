"""What a flow-cytometry channel measures, from its names (``$PnN``, ``$PnS``) and from its content.

Every channel gets a *kind* and a *measure*:

- kind ``"time"`` (``Time``, ``TIME``, ``Time MSW``, ``Computed Time``, MACSQuant ``HDR-T``/``HDR-TM``),
  ``"counter"`` (event counters and other housekeeping: ``Event Count``, ``Index``, ``Sort ...``,
  ``Unused6``, MACSQuant ``HDR-CE``/``HDR-SE``/``HDR-V``), ``"scatter"`` (``FSC*``, ``SSC*``, Beckman
  ``FS INT``/``SS Lin``...) or ``"fluorescence"`` (everything else);
- measure ``"area"``, ``"height"`` or ``"width"`` of the pulse, or ``""`` when the name does not say
  (an instrument recording one value per detector, such as ``FL1`` or ``FSC``; it counts as the area).

Time and counter channels are never features. Both names are read: a housekeeping name in either
makes the channel housekeeping, and a ``$PnS`` that spells a measure out (``FL4-Height``) overrides a
``$PnN`` that says otherwise (FACSCalibur stores FL4's height in the slot named ``FL2-W`` when the
doublet module is off). :func:`never_decreasing` is the content test the panel decision adds: a
channel that never decreases over the acquisition is a counter or a clock, whatever its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

ChannelKind = Literal["scatter", "fluorescence", "time", "counter"]
Measure = Literal["area", "height", "width", ""]

MIN_EVENTS_FOR_CONTENT = 100
"""Fewer events than this: a channel's content is not used to classify it (chance order is too likely)."""

_TIME_RE = re.compile(r"(^|[^a-z])time([^a-z]|$)|^hdr[-_ ]?tm?$")
_COUNTER_RE = re.compile(
    r"^(event|evt|index|sort|unused|original[-_ ]?id|cell[-_ ]?length)([^a-z]|$)"
    r"|^hdr[-_ ]"  # MACSQuant's HDR-CE, HDR-SE, HDR-V (its HDR-T is time, tested first)
    r"|(^|[^a-z])(count|counter)([^a-z]|$)"
)
_SCATTER_RE = re.compile(r"^[fs]sc?(\d|[-_ .]|$)")

# Pulse measures spelled out (override a contradicting $PnN when found in $PnS) ...
_WORD_MEASURES: tuple[tuple[re.Pattern[str], Measure], ...] = (
    (re.compile(r"[-_ ]?(area|integral)$"), "area"),
    (re.compile(r"[-_ ]?height$"), "height"),
    (re.compile(r"[-_ ]?width$"), "width"),
    (re.compile(r"[-_ ]peak([-_ ].*)?$"), "height"),  # iCyt: FL1-Peak-Lin
)
# ... and abbreviated.
_LETTER_MEASURES: tuple[tuple[re.Pattern[str], Measure], ...] = (
    (re.compile(r"[-_ ]a$|(?<=lin|log)a$"), "area"),  # FSC-A; Stratedigm FSC LinA
    (re.compile(r"[-_ ]h$|(?<=lin|log)h$"), "height"),
    (re.compile(r"[-_ ]w$|(?<=lin|log)w$"), "width"),
    (re.compile(r"[-_ ]int([-_ ].*)?$"), "area"),  # Beckman: FS INT, FL1 INT LOG (integral)
    (re.compile(r"[-_ ]tof$"), "width"),  # time of flight
)


@dataclass(frozen=True)
class ChannelInfo:
    """The classification of one channel.

    Attributes
    ----------
    kind
        ``"scatter"``, ``"fluorescence"``, ``"time"`` or ``"counter"``.
    measure
        ``"area"``, ``"height"``, ``"width"`` or ``""`` (not said).
    detector
        Normalised name of the detector (the name without its measure), shared by the area,
        height and width channels of one detector.
    note
        Why, when ``$PnS`` decided something ``$PnN`` did not say or said otherwise; else ``""``.
    """

    kind: ChannelKind
    measure: Measure
    detector: str
    note: str = ""


def _split_measure(name: str, *, words_only: bool = False) -> tuple[str, Measure]:
    """Return (name without its measure suffix, measure) of one channel name."""
    low = name.strip().lower()
    for patterns in (_WORD_MEASURES,) if words_only else (_WORD_MEASURES, _LETTER_MEASURES):
        for rx, measure in patterns:
            m = rx.search(low)
            if m:
                return name.strip()[: m.start()], measure
    return name.strip(), ""


def _detector_key(stem: str) -> str:
    """Normalise a detector name; a trailing amplifier ``Lin``/``Log`` is not part of it (iCyt ``FS-Lin``)."""
    return re.sub(r"(lin|log)$", "", re.sub(r"[^0-9a-z]", "", stem.lower())) or stem.lower()


def classify_channel(pnn: str, pns: str = "") -> ChannelInfo:
    """Classify one channel from its ``$PnN`` and ``$PnS``.

    Parameters
    ----------
    pnn
        Channel (detector) name.
    pns
        Marker name (``""`` when absent).

    Returns
    -------
    ChannelInfo
        Kind, measure, detector and, when ``$PnS`` decided, why.
    """
    n, s = pnn.strip(), (pns or "").strip()
    notes = []
    kind: ChannelKind | None = None
    for fam, rx in (("time", _TIME_RE), ("counter", _COUNTER_RE)):
        if rx.search(n.lower()):
            kind = fam  # type: ignore[assignment]
        elif s and rx.search(s.lower()):
            kind = fam  # type: ignore[assignment]
            notes.append(f"{fam} from $PnS {s!r}")
        if kind:
            break
    if kind is None:
        kind = "scatter" if _SCATTER_RE.match(n.lower()) or (s and _SCATTER_RE.match(s.lower())) else "fluorescence"
    stem, measure = _split_measure(n)
    if s:
        s_stem, s_measure = _split_measure(s, words_only=bool(measure))
        if s_measure and s_measure != measure:
            said = f"$PnN says {measure}" if measure else "$PnN does not say"
            notes.append(f"{s_measure} of detector {s_stem or s!r} from $PnS {s!r} ({said})")
            stem, measure = s_stem, s_measure
    return ChannelInfo(kind, measure, _detector_key(stem), "; ".join(notes))


def channel_kind(pnn: str, pns: str = "") -> ChannelKind:
    """Return the kind of a channel (see :func:`classify_channel`).

    Parameters
    ----------
    pnn
        Channel (detector) name.
    pns
        Marker name, if any.

    Returns
    -------
    str
        ``"time"``, ``"counter"``, ``"scatter"`` or ``"fluorescence"``.
    """
    return classify_channel(pnn, pns).kind


def never_decreasing(values: np.ndarray) -> bool:
    """Whether a channel's values never decrease over the acquisition and are not all equal.

    Such a channel is an event counter or a clock (MACSQuant's ``HDR-CE`` is the event index
    divided by a constant): a measured signal goes up and down from one cell to the next.
    Needs :data:`MIN_EVENTS_FOR_CONTENT` events; fewer always give False.

    Parameters
    ----------
    values
        One channel's values, in acquisition order.

    Returns
    -------
    bool
        True for a counter-like channel.
    """
    v = np.asarray(values)
    if v.size < MIN_EVENTS_FOR_CONTENT:
        return False
    return bool(v[-1] > v[0] and np.all(v[1:] >= v[:-1]))
