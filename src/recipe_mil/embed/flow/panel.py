"""Panel harmonisation: which channel of each file is which feature, and the automatic panel.

With a panel, every feature (a marker with aliases, see :func:`parse_panel`) is matched to one
channel by ``$PnS`` (marker) or ``$PnN`` (detector), case-insensitively and ignoring decorations
(``"CD45 :: V500-A"``, an ``-A`` suffix, spaces and dashes). Without one, :func:`resolve_panel`
takes, per detector, the area channel (the height where a detector has no area; never a width),
of scatter and fluorescence channels common to all files; time and counter channels, by name or
by content (never decreasing over the acquisition), are left out.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recipe_mil.embed.flow.errors import FlowFileError, fail
from recipe_mil.embed.flow.fcs import FcsHeader, read_fcs, read_fcs_header
from recipe_mil.embed.flow.kinds import never_decreasing

logger = logging.getLogger(__name__)

_AREA_SUFFIX_RE = re.compile(r"[-_ ]a$")


@dataclass(frozen=True)
class PanelMarker:
    """One feature of a panel.

    Attributes
    ----------
    marker
        The feature's name (used in the embedding and the bag's ``features`` attribute).
    aliases
        Other names under which a file may hold it, as ``$PnS`` or ``$PnN``
        (``"CD45-V500"``, ``"V500-A"``, ``"FS INT"``...).
    """

    marker: str
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The marker name followed by its aliases."""
        return (self.marker, *self.aliases)


PanelSpec = Sequence[str | Mapping[str, Any] | PanelMarker]


def parse_panel(panel: PanelSpec) -> list[PanelMarker]:
    """Normalise a panel given as config values.

    Parameters
    ----------
    panel
        Entries, each a marker name (``"CD45"``), a mapping ``{"marker": "CD45", "aliases":
        ["CD45-V500", "V500-A"]}`` or a :class:`PanelMarker`.

    Returns
    -------
    list[PanelMarker]
        In the given order.

    Raises
    ------
    ValueError
        If an entry is malformed, or two entries share a marker name.
    """
    out: list[PanelMarker] = []
    for i, entry in enumerate(panel):
        if isinstance(entry, PanelMarker):
            pm = entry
        elif isinstance(entry, str):
            pm = PanelMarker(entry.strip())
        elif isinstance(entry, Mapping):
            if "marker" not in entry:
                raise ValueError(f"panel entry {i} has no 'marker': {dict(entry)}")
            aliases = entry.get("aliases") or ()
            if isinstance(aliases, str):
                aliases = (aliases,)
            pm = PanelMarker(str(entry["marker"]).strip(), tuple(str(a).strip() for a in aliases))
        else:
            raise ValueError(f"panel entry {i} must be a string or a mapping, got {type(entry).__name__}")
        if not pm.marker:
            raise ValueError(f"panel entry {i} has an empty marker name")
        out.append(pm)
    seen: set[str] = set()
    for pm in out:
        if pm.marker.lower() in seen:
            raise ValueError(f"panel lists marker {pm.marker!r} twice")
        seen.add(pm.marker.lower())
    return out


def _norm(name: str) -> str:
    """Lower-case, drop an area suffix (``-A``) and every non-alphanumeric character."""
    s = name.strip().lower()
    s = _AREA_SUFFIX_RE.sub("", s)
    return re.sub(r"[^0-9a-z]", "", s)


def _name_keys(name: str) -> set[str]:
    """Normalised keys of a name and of its decorated parts (``"CD45 :: V500-A"``, ``"CD45 (V500)"``)."""
    if not name or not name.strip():
        return set()
    parts = [name, *name.split("::"), name.split("(")[0]]
    return {k for k in (_norm(p) for p in parts) if k}


def _match(pm: PanelMarker, header: FcsHeader, *, display_first: bool = False) -> list[int]:
    """Return the channels matching a marker at the best priority (PnS exact, PnN exact, PnS keys, PnN keys)."""
    names_exact = {n.strip().lower() for n in pm.names if n.strip()}
    names_keys = set().union(*(_name_keys(n) for n in pm.names))
    display = header.display_names()
    levels: list[list[int]] = [[], [], [], [], []]
    for i, (pnn, pns) in enumerate(zip(header.pnn, header.pns, strict=True)):
        if display_first and display[i].lower() in names_exact:
            levels[0].append(i)
        elif pns and pns.lower() in names_exact:
            levels[1].append(i)
        elif pnn.lower() in names_exact:
            levels[2].append(i)
        elif pns and _name_keys(pns) & names_keys:
            levels[3].append(i)
        elif _name_keys(pnn) & names_keys:
            levels[4].append(i)
    for hits in levels:
        if len(hits) > 1:
            area = [i for i in hits if header.measures[i] in ("area", "")]
            hits = area if area else hits
        if hits:
            return hits
    return []


def channel_mapping(
    header: FcsHeader | str | os.PathLike[str],
    features: Sequence[str],
    *,
    panel: PanelSpec | None = None,
) -> dict[str, int]:
    """Map every feature to one channel of a file.

    A feature listed in ``panel`` is looked for under its marker name and aliases; any other
    feature under its own name. Matching is case-insensitive, tries in order the channel's
    display name (``$PnS``, else ``$PnN``), ``$PnS``, ``$PnN``, then both with decorations
    removed (``" :: "`` parts, a ``-A`` suffix, spaces, dashes); when several channels match
    at the best level, the area channel wins (see :func:`~recipe_mil.embed.flow.kinds.classify_channel`).

    Parameters
    ----------
    header
        A file's header (:func:`read_fcs_header`) or the file.
    features
        Feature names (from :func:`resolve_panel`).
    panel
        The panel with aliases, see :func:`parse_panel`.

    Returns
    -------
    dict[str, int]
        Feature -> 0-based channel index, in the order of ``features``.

    Raises
    ------
    FlowFileError
        If a feature matches no channel (a missing panel marker) or several, if it matches
        a time or counter channel, or if two features match the same channel.
    """
    h = header if isinstance(header, FcsHeader) else read_fcs_header(header)
    by_name = {pm.marker.lower(): pm for pm in parse_panel(panel or [])}
    out: dict[str, int] = {}
    used: dict[int, str] = {}
    for feat in features:
        pm = by_name.get(feat.lower(), PanelMarker(feat))
        hits = _match(pm, h, display_first=True)
        if not hits:
            chans = ", ".join(h.label(i) for i in range(h.n_channels))
            raise fail(
                h.path,
                f"missing panel marker {feat!r} (looked for {list(pm.names)} in $PnS and $PnN; channels: {chans})",
            )
        if len(hits) > 1:
            raise fail(
                h.path,
                f"panel marker {feat!r} is ambiguous: channels {[h.label(i) for i in hits]} all match",
            )
        idx = hits[0]
        if h.kinds[idx] in ("time", "counter"):
            never = "Time is never a feature" if h.kinds[idx] == "time" else "event counters are never features"
            raise fail(h.path, f"panel marker {feat!r} matches the {h.kinds[idx]} channel {h.label(idx)!r}; {never}")
        if idx in used:
            raise fail(h.path, f"panel markers {used[idx]!r} and {feat!r} both match channel {h.label(idx)}")
        used[idx] = feat
        out[feat] = idx
    return out


def content_flags(header: FcsHeader, events: np.ndarray) -> dict[int, str]:
    """Find the scatter/fluorescence channels whose content says they are not markers.

    Parameters
    ----------
    header, events
        A file as read by :func:`~recipe_mil.embed.flow.fcs.read_fcs`.

    Returns
    -------
    dict[int, str]
        0-based channel -> why: ``"counter: never decreases over the acquisition"`` (see
        :func:`~recipe_mil.embed.flow.kinds.never_decreasing`).
    """
    out: dict[int, str] = {}
    for i, kind in enumerate(header.kinds):
        if kind in ("scatter", "fluorescence"):
            if never_decreasing(events[:, i]):
                out[i] = "counter: never decreases over the acquisition"
    return out


def auto_features(header: FcsHeader, flags: Mapping[int, str] | None = None) -> tuple[list[int], dict[int, str]]:
    """Choose a file's channels without a panel.

    Per detector, the area channel (or the one channel whose name does not say), else the
    height; never a width, a time or counter channel, or a channel in ``flags``.

    Parameters
    ----------
    header
        The file's header.
    flags
        Channels left out for their content (:func:`content_flags`).

    Returns
    -------
    chosen
        0-based channel indices, in file order.
    left_out
        0-based channel -> why it is not a feature.
    """
    flags = dict(flags or {})
    left: dict[int, str] = {}
    cands: list[int] = []
    for i, kind in enumerate(header.kinds):
        if kind in ("time", "counter"):
            left[i] = kind
        elif i in flags:
            left[i] = flags[i]
        elif header.measures[i] == "width":
            left[i] = "width"
        else:
            cands.append(i)
    with_area = {header.detectors[i] for i in cands if header.measures[i] in ("area", "")}
    chosen = []
    for i in cands:
        if header.measures[i] == "height" and header.detectors[i] in with_area:
            left[i] = "height (the detector has an area channel)"
        else:
            chosen.append(i)
    return chosen, left


def resolve_panel(
    paths: Sequence[str | os.PathLike[str]],
    panel: PanelSpec | None = None,
    *,
    datasets: Sequence[int | None] | None = None,
) -> list[str]:
    """Decide the features of a data set.

    Parameters
    ----------
    paths
        The data set's FCS files.
    panel
        With a panel: its marker names, after checking that every file has every marker
        (:func:`channel_mapping`; only HEADER and TEXT are read). Without: the channels
        :func:`auto_features` chooses in every file (each file's events are read once, for
        :func:`content_flags`), named by ``$PnS`` (else ``$PnN``), in the first file's order.
        What is left out, and why, is logged (logger ``recipe_mil.embed.flow``).
    datasets
        Per file, the data set to read (see :func:`~recipe_mil.embed.flow.fcs.read_fcs_header`);
        None: each file's default.

    Returns
    -------
    list[str]
        Feature names.

    Raises
    ------
    FlowFileError
        If no file is readable and has the panel's markers, or if no channel is common to all
        readable files. A single unreadable file (or one lacking a marker) is only logged, so
        the other patients' bags can still be made; its own embedding then fails naming it.
    ValueError
        If ``paths`` is empty, ``datasets`` has another length, or the panel is malformed.
    """
    if not paths:
        raise ValueError("resolve_panel: no FCS files given")
    sets = list(datasets) if datasets is not None else [None] * len(paths)
    if len(sets) != len(paths):
        raise ValueError(f"resolve_panel: {len(paths)} files but {len(sets)} data set choices")
    markers = parse_panel(panel) if panel else None
    features = [pm.marker for pm in markers] if markers else []
    chosen: list[tuple[FcsHeader, list[str], dict[int, str]]] = []
    problems = []
    for p, ds in zip(paths, sets, strict=True):
        # A broken file must not stop the others: it is logged here and fails its own embedding job.
        try:
            if markers:
                h = read_fcs_header(p, ds)
                channel_mapping(h, features, panel=markers)
                chosen.append((h, [], {}))
                continue
            h, events = read_fcs(p, ds)
            idx, left = auto_features(h, content_flags(h, events))
            del events
            names = h.display_names()
            chosen.append((h, [names[i] for i in idx], left))
        except FlowFileError as exc:
            problems.append(exc)
            logger.warning("left out of the panel decision (its own bag will fail): %s", exc)
    if not chosen:
        raise problems[-1]
    if markers:
        logger.info("panel of %d markers found in %d of %d files: %s", len(features), len(chosen), len(paths), features)
        return features
    first, first_names, first_left = chosen[0]
    logger.info(
        "no panel given: left out of %s: %s",
        first.path.name,
        ", ".join(f"{first.label(i)} ({why})" for i, why in sorted(first_left.items())) or "nothing",
    )
    common = []
    for feat in first_names:
        missing = [h.path.name for h, names, _ in chosen[1:] if feat.lower() not in {n.lower() for n in names}]
        if missing:
            logger.warning(
                "no panel given: leaving out %r, not chosen in %d file(s) (e.g. %s: absent, or a counter, height or "
                "width there); a panel with aliases can match it",
                feat,
                len(missing),
                missing[0],
            )
        else:
            common.append(feat)
    if not common:
        left = ", ".join(f"{first.label(i)}: {w}" for i, w in first_left.items())
        why = "" if first_names else f" (in this file: {left})"
        raise fail(first.path, f"no scatter or fluorescence channel is common to all files{why}; give a panel")
    logger.info(
        "no panel given: using the %d scatter/fluorescence channels common to all %d files: %s",
        len(common),
        len(chosen),
        common,
    )
    return common
