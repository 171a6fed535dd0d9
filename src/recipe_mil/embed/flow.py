"""Per-patient bags of event embeddings from flow-cytometry ``.fcs`` files (modality ``flow``; see ``docs/method.md``).

One FCS file is one patient; one event is one instance. For every file:

1. **Read** (FCS 2.0, 3.0, 3.1; integer, float or double data) with :class:`flowkit.Sample`, and
   with :mod:`flowio` where flowkit cannot (files holding several data sets, such as Beckman
   ``.lmd`` files, whose FCS 3.0 full-resolution data set is read). The HEADER and TEXT segments
   are checked against the file first, so that a truncated file, an empty one or a TEXT segment
   that lies about the DATA size gives a :class:`FlowFileError` naming the file and the reason.
   Gain (``$PnG``), log amplification (``$PnE``) and ``$TIMESTEP`` are applied as flowkit does.
2. **Harmonise the panel**: every feature (a marker with aliases, see :func:`parse_panel`) is
   matched to one channel by ``$PnS`` (marker) or ``$PnN`` (detector), case-insensitively and
   ignoring decorations (``"CD45 :: V500-A"``, an ``-A`` suffix, spaces and dashes). Without a
   panel, :func:`resolve_panel` uses the scatter and fluorescence channels common to all files.
   ``Time`` is never a feature.
3. **Event QC** on the uncompensated, untransformed values of the channels used: drop events with
   a non-finite value, saturated events (value >= ``$PnR - 1``), optionally events outside the
   kept fraction of the acquisition time and events below a scatter threshold; then subsample to
   ``max_events`` (seeded). Instance ids are event indices in the original file.
4. **Compensate** with the file's spillover keyword (``$SPILLOVER``, ``$SPILL`` or ``SPILL``), a
   matrix from a CSV file, or not at all.
5. **Transform** fluorescence channels with logicle (flowkit) or ``asinh(x / cofactor)``; scatter
   channels are linear, divided by their top of scale.
6. **Scale** (``standardize``): by default a *fixed* per-channel affine map that sends the
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
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recipe_mil.io.bags import instance_truth, write_bag
from recipe_mil.seeds import derive_seed

logger = logging.getLogger("recipe_mil.embed.flow")

_HEADER_BYTES = 58
_SUPPORTED_VERSIONS = ("2.0", "3.0", "3.1", "3.2")
_MAX_DATA_SETS = 16
_CHUNK = 1 << 16  # rows per QC chunk
_FIXED_LOW, _FIXED_HIGH = -2.0, 2.0  # the fixed scaling sends [0, top] (transformed) to this interval

_TIME_RE = re.compile(r"^(time|hdr[-_ ]?t$)")
_SCATTER_RE = re.compile(r"^[fs]sc?(\d|[-_ .]|$)")
_OTHER_RE = re.compile(r"^(event|evt|index|sort|cell[-_ ]?length|original[-_ ]?id)")
_AREA_SUFFIX_RE = re.compile(r"[-_ ]a$")
_HW_SUFFIX_RE = re.compile(r"[-_ ]([hw])$", re.IGNORECASE)

ChannelKind = Literal["scatter", "fluorescence", "time", "other"]


class FlowFileError(ValueError):
    """An FCS file is unreadable, inconsistent, empty or lacks what the embedding needs.

    The message starts with the file's path and says why.
    """


# --------------------------------------------------------------------------------------------
# panel
# --------------------------------------------------------------------------------------------


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


def channel_kind(pnn: str) -> ChannelKind:
    """Classify a channel by its ``$PnN``.

    Parameters
    ----------
    pnn
        Channel (detector) name.

    Returns
    -------
    str
        ``"time"`` (``Time``, ``TIME``, ``HDR-T``), ``"scatter"`` (``FSC*``, ``SSC*``, Beckman
        ``FS INT``/``SS INT``...), ``"other"`` (event counters, sort and index channels) or
        ``"fluorescence"`` (everything else).
    """
    low = pnn.strip().lower()
    if _TIME_RE.match(low):
        return "time"
    if _SCATTER_RE.match(low):
        return "scatter"
    if _OTHER_RE.match(low):
        return "other"
    return "fluorescence"


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


@dataclass
class FcsHeader:
    """What an FCS file says about its data set, checked against the file (no events read).

    Attributes
    ----------
    path
        The file.
    version
        FCS version of the data set read (``"2.0"``, ``"3.0"``, ``"3.1"``).
    n_events
        ``$TOT``.
    pnn, pns
        Channel (``$PnN``) and marker (``$PnS``; ``""`` when absent) names.
    kinds
        :func:`channel_kind` of every channel.
    ranges
        ``$PnR`` of every channel.
    tops
        Top of scale of every channel in the units of the read events (``$PnR`` divided by
        the gain, or ``log0 * 10**decades`` for log-amplified channels).
    saturation
        Value of ``$PnR - 1`` in the units of the read events: an event at or above it on a
        channel is saturated there.
    metadata
        TEXT keywords, lower-case and without ``$`` (flowio's convention).
    data_set_offset
        Byte offset of the data set read (non-zero for the second data set of a multi-data-set file).
    n_data_sets
        Number of data sets in the file.
    read_options
        Options passed to flowio/flowkit to read the events (offset quirks).
    """

    path: Path
    version: str
    n_events: int
    pnn: list[str]
    pns: list[str]
    kinds: list[ChannelKind]
    ranges: np.ndarray
    tops: np.ndarray
    saturation: np.ndarray
    metadata: dict[str, str]
    data_set_offset: int = 0
    n_data_sets: int = 1
    read_options: dict[str, bool] = field(default_factory=dict)

    @property
    def n_channels(self) -> int:
        """Number of channels (``$PAR``)."""
        return len(self.pnn)

    def display_names(self) -> list[str]:
        """Return ``$PnS`` where set, else ``$PnN``.

        A ``$PnS`` shared by several channels (FACSDiva labels the ``-A`` and ``-H`` of a
        detector alike) stays with the one area channel among them; the others, or all of
        them if that is ambiguous, fall back to ``$PnN``.
        """
        names = [s.strip() if s and s.strip() else n for n, s in zip(self.pnn, self.pns, strict=True)]
        groups: dict[str, list[int]] = {}
        for i, nm in enumerate(names):
            groups.setdefault(nm.lower(), []).append(i)
        out = list(names)
        for idx in groups.values():
            if len(idx) == 1:
                continue
            area = [i for i in idx if _is_area(self.pnn[i])]
            for i in idx:
                if len(area) != 1 or i != area[0]:
                    out[i] = self.pnn[i]
        return out


def _fail(path: str | os.PathLike[str], reason: str) -> FlowFileError:
    return FlowFileError(f"{path}: {reason}")


def _parse_header(path: Path, raw: bytes, offset: int) -> dict[str, Any]:
    where = f" (data set at byte {offset})" if offset else ""
    if len(raw) < _HEADER_BYTES:
        raise _fail(path, f"truncated file: the FCS HEADER{where} needs {_HEADER_BYTES} bytes, found {len(raw)}")
    if not raw.startswith(b"FCS"):
        raise _fail(path, f"not an FCS file or corrupted{where}: it starts with {raw[:6]!r}, not 'FCS'")
    version = raw[3:6].decode("ascii", "replace")
    if version not in _SUPPORTED_VERSIONS:
        raise _fail(path, f"unsupported FCS version {version!r}{where} (supported: 2.0, 3.0, 3.1)")
    fields = []
    for i in range(6):
        chunk = raw[10 + 8 * i : 18 + 8 * i].strip()
        try:
            fields.append(int(chunk) if chunk else 0)
        except ValueError:
            if i >= 4:  # analysis offsets are optional and sometimes blank or junk
                fields.append(0)
                continue
            raise _fail(path, f"corrupted FCS HEADER{where}: offset field {i + 1} is {chunk!r}") from None
    return {
        "version": version,
        "text_start": fields[0],
        "text_stop": fields[1],
        "data_start": fields[2],
        "data_stop": fields[3],
    }


def _read_text(path: Path, offset: int) -> dict[str, str]:
    """Parse the TEXT segment of the data set at ``offset`` with flowio."""
    import flowio
    from flowio.exceptions import FlowIOException

    try:
        fd = flowio.FlowData(
            str(path),
            only_text=True,
            ignore_offset_discrepancy=True,
            nextdata_offset=offset,  # never None: a multi-data-set file is not an error here
        )
    except FlowIOException as exc:
        msg = str(exc)
        if "greater than file size" in msg:
            size = path.stat().st_size
            raise _fail(
                path, f"truncated file: the DATA segment should end beyond the end of the file ({size} bytes)"
            ) from exc
        raise _fail(path, f"corrupted file: {msg}") from exc
    except (KeyError, ValueError, IndexError, EOFError, UnicodeDecodeError) as exc:
        raise _fail(path, f"corrupted TEXT segment ({type(exc).__name__}: {exc})") from exc
    return dict(fd.text)


def _int_keyword(path: Path, text: Mapping[str, str], key: str) -> int:
    if key not in text:
        raise _fail(path, f"corrupted TEXT segment: required keyword ${key.upper()} is missing")
    try:
        return int(str(text[key]).strip())
    except ValueError:
        raise _fail(path, f"corrupted TEXT segment: ${key.upper()} is {text[key]!r}, not an integer") from None


def _float_keyword(path: Path, text: Mapping[str, str], key: str, default: float | None = None) -> float:
    value = text.get(key)
    if value is None or not str(value).strip():
        if default is None:
            raise _fail(path, f"corrupted TEXT segment: required keyword ${key.upper()} is missing")
        return default
    try:
        return float(str(value).strip())
    except ValueError:
        raise _fail(path, f"corrupted TEXT segment: ${key.upper()} is {value!r}, not a number") from None


def _bytes_per_event(path: Path, text: Mapping[str, str], n_par: int) -> int:
    datatype = str(text.get("datatype", "")).strip().upper()
    if datatype == "I":
        bits = [_int_keyword(path, text, f"p{i}b") for i in range(1, n_par + 1)]
        bad = sorted({b for b in bits if b not in (8, 16, 32)})
        if bad:
            raise _fail(path, f"unsupported integer bit width(s) {bad} ($PnB); supported: 8, 16, 32")
        return sum(bits) // 8
    if datatype == "F":
        return 4 * n_par
    if datatype == "D":
        return 8 * n_par
    if datatype == "A":
        raise _fail(path, "ASCII ($DATATYPE=A) event data is not supported")
    raise _fail(path, f"corrupted TEXT segment: unknown $DATATYPE {text.get('datatype')!r}")


def _channel_scale(path: Path, text: Mapping[str, str], i: int) -> tuple[float, float, float]:
    """Return ($PnR, top of scale, saturation threshold) of channel ``i`` (1-based) in read units."""
    pnr = _float_keyword(path, text, f"p{i}r")
    decades, log0 = 0.0, 0.0
    pne = str(text.get(f"p{i}e", "0,0"))
    try:
        decades, log0 = (float(x) for x in pne.split(",")[:2])
    except ValueError:
        logger.warning("%s: $P%dE is %r; assuming linear", path, i, pne)
    if decades > 0 and log0 == 0:
        log0 = 1.0
    gain = _float_keyword(path, text, f"p{i}g", 1.0)
    is_time = channel_kind(str(text.get(f"p{i}n", ""))) == "time"
    if is_time or gain == 0:
        gain = 1.0

    def preprocess(v: float) -> float:  # flowio's preprocessing of one stored value
        if decades > 0:
            v = 10 ** (decades * v / pnr) * log0
        return v / gain

    top = log0 * 10**decades / gain if decades > 0 else pnr / gain
    return pnr, top, preprocess(pnr - 1)


def _data_offsets(path: Path, header: Mapping[str, Any], text: Mapping[str, str]) -> tuple[int, int, str]:
    """Return the DATA segment start/stop (relative to the data set) and which segment gave them."""
    h_start, h_stop = int(header["data_start"]), int(header["data_stop"])
    if header["version"] == "2.0":
        return h_start, h_stop, "HEADER"
    try:
        t_start = int(str(text["begindata"]).strip())
        t_stop = int(str(text["enddata"]).strip())
    except (KeyError, ValueError):
        return h_start, h_stop, "HEADER"
    if (h_start, h_stop) == (t_start, t_stop) or (h_start == 0 and h_stop == 0):
        return t_start, t_stop, "TEXT"
    return t_start, t_stop, "TEXT+HEADER"


def _data_set_offsets(path: Path, fh: Any, size: int) -> list[tuple[int, dict[str, Any]]]:
    """Follow ``$NEXTDATA`` through the file; return (offset, header) of every data set."""
    out: list[tuple[int, dict[str, Any]]] = []
    offset = 0
    seen: set[int] = set()
    while len(out) < _MAX_DATA_SETS:
        fh.seek(offset)
        header = _parse_header(path, fh.read(_HEADER_BYTES), offset)
        out.append((offset, header))
        seen.add(offset)
        text_start, text_stop = header["text_start"], header["text_stop"]
        if text_stop < text_start or text_start < _HEADER_BYTES:
            raise _fail(path, f"corrupted FCS HEADER: TEXT segment at bytes {text_start}-{text_stop}")
        if offset + text_stop >= size:
            raise _fail(
                path,
                f"truncated file: the TEXT segment should end at byte {offset + text_stop} "
                f"but the file has only {size} bytes",
            )
        if header["data_stop"] and offset + header["data_stop"] > size:  # == size: maybe the off-by-one quirk
            raise _fail(
                path,
                f"truncated file: the DATA segment should end at byte {offset + header['data_stop']} but the file "
                f"has only {size} bytes ({offset + header['data_stop'] + 1 - size} bytes missing)",
            )
        fh.seek(offset + text_start)
        text = fh.read(text_stop - text_start + 1)
        match = re.search(rb"(?i)\$?NEXTDATA(.)\s*(\d+)\s*\1", text)
        nxt = int(match.group(2)) if match else 0
        if nxt <= 0 or offset + nxt in seen or offset + nxt + _HEADER_BYTES > size:
            break
        offset += nxt
    return out


def read_fcs_header(path: str | os.PathLike[str]) -> FcsHeader:
    """Read and check an FCS file's HEADER and TEXT segments (no events are read).

    A file holding several data sets (Beckman ``.lmd``: an FCS 2.0 data set of 10-bit
    integers, then an FCS 3.0 data set of full-resolution floats) is read at the data set with
    the highest FCS version (the first of equals).

    Parameters
    ----------
    path
        An ``.fcs`` or ``.lmd`` file.

    Returns
    -------
    FcsHeader
        Channels, ranges and keywords of the data set to read.

    Raises
    ------
    FlowFileError
        If the file is missing, empty (0 bytes or ``$TOT=0``), truncated, corrupted, of an
        unsupported version or data type, or if its TEXT segment disagrees with the size of
        its DATA segment.
    """
    p = Path(path)
    if not p.is_file():
        raise _fail(p, "FCS file does not exist")
    size = p.stat().st_size
    if size == 0:
        raise _fail(p, "empty file (0 bytes)")
    with p.open("rb") as fh:
        data_sets = _data_set_offsets(p, fh, size)
    offset, header = max(data_sets, key=lambda oh: (oh[1]["version"], -oh[0]))
    if len(data_sets) > 1:
        logger.info(
            "%s: %d data sets (FCS %s); reading the FCS %s data set at byte %d",
            p,
            len(data_sets),
            ", ".join(h["version"] for _, h in data_sets),
            header["version"],
            offset,
        )
    text = _read_text(p, offset)

    n_par = _int_keyword(p, text, "par")
    n_tot = _int_keyword(p, text, "tot")
    if n_par <= 0:
        raise _fail(p, f"corrupted TEXT segment: $PAR={n_par}")
    missing = [f"$P{i}N" for i in range(1, n_par + 1) if f"p{i}n" not in text]
    if missing:
        raise _fail(p, f"corrupted TEXT segment: $PAR={n_par} but {', '.join(missing[:5])} missing")
    if n_tot == 0:
        raise _fail(p, "empty file: 0 events ($TOT=0)")
    if n_tot < 0:
        raise _fail(p, f"corrupted TEXT segment: $TOT={n_tot}")
    bpe = _bytes_per_event(p, text, n_par)
    start, stop, source = _data_offsets(p, header, text)
    options: dict[str, bool] = {}
    if source == "TEXT+HEADER":
        expected_stop = start + n_tot * bpe - 1
        if header["data_stop"] - header["data_start"] + 1 == n_tot * bpe and stop != expected_stop:
            logger.warning("%s: HEADER and TEXT disagree on the DATA offsets; the HEADER's match $TOT, using them", p)
            start, stop = int(header["data_start"]), int(header["data_stop"])
            options["use_header_offsets"] = True
        else:
            logger.warning("%s: HEADER and TEXT disagree on the DATA offsets; using the TEXT's", p)
            options["ignore_offset_discrepancy"] = True
    elif source == "TEXT" and (header["data_start"], header["data_stop"]) != (start, stop):
        options["ignore_offset_discrepancy"] = True  # HEADER offsets left at 0, as several writers do
    expected = n_tot * bpe
    actual = stop - start + 1
    off_by_one = actual == expected + 1  # $ENDDATA = the first byte after the data (a common writer bug)
    if offset + stop >= size + off_by_one:
        raise _fail(
            p,
            f"truncated file: the DATA segment should end at byte {offset + stop} but the file has only "
            f"{size} bytes ({offset + stop + 1 - size} bytes missing)",
        )
    if off_by_one:
        logger.warning("%s: the DATA end offset is off by one (a common writer quirk); reading anyway", p)
        options["ignore_offset_error"] = True
    elif actual != expected:
        raise _fail(
            p,
            f"the TEXT segment does not match the DATA segment: $TOT={n_tot} events x {bpe} bytes "
            f"($PAR={n_par}, $DATATYPE={text.get('datatype')}) = {expected} bytes, but the DATA segment "
            f"(bytes {start}-{stop}) holds {actual} bytes",
        )

    pnn = [str(text[f"p{i}n"]).strip() for i in range(1, n_par + 1)]
    pns = [str(text.get(f"p{i}s", "")).strip() for i in range(1, n_par + 1)]
    scales = np.array([_channel_scale(p, text, i) for i in range(1, n_par + 1)], dtype=np.float64)
    return FcsHeader(
        path=p,
        version=header["version"],
        n_events=n_tot,
        pnn=pnn,
        pns=pns,
        kinds=[channel_kind(n) for n in pnn],
        ranges=scales[:, 0],
        tops=scales[:, 1],
        saturation=scales[:, 2],
        metadata=text,
        data_set_offset=offset,
        n_data_sets=len(data_sets),
        read_options=options,
    )


def read_fcs(path: str | os.PathLike[str]) -> tuple[FcsHeader, np.ndarray]:
    """Read an FCS file's events (flowkit; flowio for multi-data-set files).

    Parameters
    ----------
    path
        An ``.fcs`` or ``.lmd`` file.

    Returns
    -------
    header
        See :func:`read_fcs_header`.
    events
        Float64 array (``$TOT`` x ``$PAR``), uncompensated, with gain, log amplification and
        ``$TIMESTEP`` applied (flowkit's ``source="raw"``).

    Raises
    ------
    FlowFileError
        As :func:`read_fcs_header`, or if flowkit/flowio cannot parse the events.
    """
    import flowio
    import flowkit as fk

    header = read_fcs_header(path)
    p = header.path
    single = header.n_data_sets == 1 and str(header.metadata.get("nextdata", "0")).strip() in ("", "0")
    try:
        with warnings.catch_warnings():  # flowio warns about offset quirks, already logged above
            warnings.filterwarnings("ignore", category=UserWarning, module="flowio")
            if single:
                sample = fk.Sample(str(p), subsample=0, **header.read_options)
            else:  # flowkit refuses multi-data-set files; flowio reads the chosen data set
                data = flowio.FlowData(str(p), nextdata_offset=header.data_set_offset, **header.read_options)
                sample = fk.Sample(data, subsample=0)
        events = np.asarray(sample.get_events(source="raw"), dtype=np.float64)
    except MemoryError:
        raise
    except Exception as exc:  # flowio raises many types on malformed input
        raise _fail(p, f"corrupted file: cannot read the events ({type(exc).__name__}: {exc})") from exc
    if events.shape != (header.n_events, header.n_channels):
        raise _fail(
            p,
            f"the TEXT segment does not match the DATA segment: expected {header.n_events} events x "
            f"{header.n_channels} channels, read {events.shape[0]} x {events.shape[1] if events.ndim == 2 else 0}",
        )
    return header, events


# --------------------------------------------------------------------------------------------
# channel matching
# --------------------------------------------------------------------------------------------


def _is_area(pnn: str) -> bool:
    return not _HW_SUFFIX_RE.search(pnn.strip())


def _match(pm: PanelMarker, header: FcsHeader, *, display_first: bool = False) -> list[int]:
    """Channels matching a marker at the best priority (PnS exact, PnN exact, PnS keys, PnN keys)."""
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
            area = [i for i in hits if _is_area(header.pnn[i])]
            hits = area if area else hits
        if hits:
            return hits
    return []


def _channel_label(header: FcsHeader, i: int) -> str:
    return f"{header.pnn[i]} ({header.pns[i]})" if header.pns[i] else header.pnn[i]


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
    at the best level, the area channel (no ``-H``/``-W`` suffix) wins.

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
        the time channel, or if two features match the same channel.
    """
    h = header if isinstance(header, FcsHeader) else read_fcs_header(header)
    by_name = {pm.marker.lower(): pm for pm in parse_panel(panel or [])}
    out: dict[str, int] = {}
    used: dict[int, str] = {}
    for feat in features:
        pm = by_name.get(feat.lower(), PanelMarker(feat))
        hits = _match(pm, h, display_first=True)
        if not hits:
            chans = ", ".join(_channel_label(h, i) for i in range(h.n_channels))
            raise _fail(
                h.path,
                f"missing panel marker {feat!r} (looked for {list(pm.names)} in $PnS and $PnN; channels: {chans})",
            )
        if len(hits) > 1:
            raise _fail(
                h.path,
                f"panel marker {feat!r} is ambiguous: channels {[_channel_label(h, i) for i in hits]} all match",
            )
        idx = hits[0]
        if h.kinds[idx] == "time":
            raise _fail(
                h.path, f"panel marker {feat!r} matches the time channel {h.pnn[idx]!r}; Time is never a feature"
            )
        if idx in used:
            raise _fail(h.path, f"panel markers {used[idx]!r} and {feat!r} both match channel {_channel_label(h, idx)}")
        used[idx] = feat
        out[feat] = idx
    return out


def _auto_features(header: FcsHeader) -> list[str]:
    """Feature names of a file without a panel: scatter and fluorescence (area) channels."""
    names = header.display_names()
    pnn_upper = {n.strip().upper() for n in header.pnn}
    out = []
    for i, (pnn, kind) in enumerate(zip(header.pnn, header.kinds, strict=True)):
        if kind not in ("scatter", "fluorescence"):
            continue
        m = _HW_SUFFIX_RE.search(pnn.strip())
        if kind == "fluorescence" and m and (pnn.strip()[: m.start()] + "-A").upper() in pnn_upper:
            continue  # height/width of a detector whose area is recorded
        out.append(names[i])
    return out


def resolve_panel(paths: Sequence[str | os.PathLike[str]], panel: PanelSpec | None = None) -> list[str]:
    """Decide the features of a data set.

    Parameters
    ----------
    paths
        The data set's FCS files (only their HEADER and TEXT are read).
    panel
        With a panel: its marker names, after checking that every file has every marker
        (:func:`channel_mapping`). Without: the scatter and fluorescence channels common to
        all files, named by ``$PnS`` (else ``$PnN``), in the first file's order; fluorescence
        height/width channels are left out when their area channel exists, and ``Time`` and
        event counters always are. The choice is logged (logger ``recipe_mil.embed.flow``).

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
        If ``paths`` is empty or the panel is malformed.
    """
    if not paths:
        raise ValueError("resolve_panel: no FCS files given")
    markers = parse_panel(panel) if panel else None
    features = [pm.marker for pm in markers] if markers else []
    headers, problems = [], []
    for p in paths:
        # A broken file must not stop the others: it is logged here and fails its own embedding job.
        try:
            h = read_fcs_header(p)
            if markers:
                channel_mapping(h, features, panel=markers)
            headers.append(h)
        except FlowFileError as exc:
            problems.append(exc)
            logger.warning("left out of the panel decision (its own bag will fail): %s", exc)
    if not headers:
        raise problems[-1]
    if markers:
        logger.info(
            "panel of %d markers found in %d of %d files: %s", len(features), len(headers), len(paths), features
        )
        return features
    first = _auto_features(headers[0])
    common = []
    for feat in first:
        missing = []
        for h in headers[1:]:
            names = {n.lower() for n in h.display_names()}
            if feat.lower() not in names:
                missing.append(h.path.name)
        if missing:
            logger.warning(
                "no panel given: leaving out %r, absent from %d file(s) (e.g. %s); a panel with aliases can match it",
                feat,
                len(missing),
                missing[0],
            )
        else:
            common.append(feat)
    if not common:
        raise _fail(headers[0].path, "no scatter or fluorescence channel is common to all files; give a panel")
    logger.info(
        "no panel given: using the %d scatter/fluorescence channels common to all %d files: %s",
        len(common),
        len(headers),
        common,
    )
    return common


# --------------------------------------------------------------------------------------------
# compensation
# --------------------------------------------------------------------------------------------


def _match_names(header: FcsHeader, names: Sequence[str], source: str) -> list[int]:
    """Channel indices of the names of a spillover matrix ($PnN, else $PnS, else 1-based numbers)."""
    pnn = {n.lower(): i for i, n in enumerate(header.pnn)}
    pns = {n.lower(): i for i, n in enumerate(header.pns) if n}
    out = []
    for name in names:
        key = name.strip().lower()
        if key in pnn:
            out.append(pnn[key])
        elif key in pns:
            out.append(pns[key])
        elif key.isdigit() and 1 <= int(key) <= header.n_channels:
            out.append(int(key) - 1)
        else:
            raise _fail(header.path, f"{source} names channel {name!r}, which is not in the file ($PnN: {header.pnn})")
    if len(set(out)) != len(out):
        raise _fail(header.path, f"{source} names a channel twice: {list(names)}")
    return out


def parse_spillover(value: str) -> tuple[list[str], np.ndarray]:
    """Parse a spillover keyword value (``"n,name_1,...,name_n,s_11,...,s_nn"``).

    Parameters
    ----------
    value
        The keyword's value.

    Returns
    -------
    names
        The ``n`` channel names.
    matrix
        ``(n, n)`` spillover matrix, row = fluorochrome, column = detector.

    Raises
    ------
    ValueError
        If the value is malformed.
    """
    tokens = [t.strip() for t in re.split(r"[,\n\r]+", value.strip()) if t.strip()]
    try:
        n = int(float(tokens[0]))
    except (IndexError, ValueError):
        raise ValueError(f"spillover value does not start with a channel count: {value[:40]!r}") from None
    if n <= 0 or len(tokens) != 1 + n + n * n:
        raise ValueError(f"spillover value has {len(tokens)} fields; {1 + n + n * n} expected for {n} channels")
    names = tokens[1 : n + 1]
    try:
        matrix = np.array([float(t) for t in tokens[n + 1 :]], dtype=np.float64).reshape(n, n)
    except ValueError:
        raise ValueError("spillover value has non-numeric coefficients") from None
    return names, matrix


def file_spillover(header: FcsHeader) -> tuple[list[str], np.ndarray, str] | None:
    """Return the spillover matrix stored in a file, if any.

    Looks for ``$SPILLOVER`` (FCS 3.1), then ``$SPILL`` / ``SPILL`` (FACSDiva, FlowJo); flowio
    reads keywords without ``$`` and in lower case, so these are the keys ``spillover`` and
    ``spill``.

    Parameters
    ----------
    header
        A file's header.

    Returns
    -------
    tuple or None
        ``(names, matrix, keyword)``, or None if the file has no spillover keyword.

    Raises
    ------
    FlowFileError
        If the keyword is malformed.
    """
    for key in ("spillover", "spill"):
        value = header.metadata.get(key)
        if value is None or not str(value).strip() or str(value).strip() in ("0", "0,"):
            continue
        try:
            names, matrix = parse_spillover(str(value))
        except ValueError as exc:
            raise _fail(header.path, f"malformed ${key.upper()} keyword: {exc}") from None
        return names, matrix, f"${key.upper()}"
    return None


def read_compensation_csv(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """Read a spillover matrix from a CSV file whose header row names the channels.

    Parameters
    ----------
    path
        CSV (or TSV) file; an optional first column of row names is ignored.

    Returns
    -------
    names
        Channel names from the header.
    matrix
        Square spillover matrix (row = fluorochrome, column = detector).

    Raises
    ------
    FlowFileError
        If the file is missing or not a square numeric matrix.
    """
    p = Path(path)
    if not p.is_file():
        raise _fail(p, "compensation matrix file does not exist")
    try:
        df = pd.read_csv(p, sep=None, engine="python")
    except Exception as exc:
        raise _fail(p, f"cannot read the compensation matrix ({exc})") from exc
    if df.shape[1] == df.shape[0] + 1:
        df = df.iloc[:, 1:]
    try:
        matrix = df.to_numpy(dtype=np.float64)
    except ValueError:
        raise _fail(p, "compensation matrix has non-numeric values") from None
    if matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise _fail(p, f"compensation matrix must be square with channel names as header, got shape {matrix.shape}")
    return [str(c).strip() for c in df.columns], matrix


def _compensation(header: FcsHeader, spec: str) -> tuple[list[int], np.ndarray, str] | None:
    """Channel indices, the inverse spillover matrix and a description, or None for no compensation."""
    if spec == "none":
        return None
    if spec == "file":
        found = file_spillover(header)
        if found is None:
            logger.warning(
                "%s: compensation='file' but the file has no $SPILLOVER/$SPILL keyword; not compensated", header.path
            )
            return None
        names, matrix, source = found
        where = f"the {source} keyword"
    else:
        names, matrix = read_compensation_csv(spec)
        source = f"matrix file {spec}"
        where = f"compensation matrix {spec}"
    idx = _match_names(header, names, where)
    if not np.all(np.isfinite(matrix)):
        raise _fail(header.path, f"{where} has non-finite values")
    if np.linalg.cond(matrix) > 1e12:
        raise _fail(header.path, f"{where} is singular and cannot be inverted")
    return idx, np.linalg.inv(matrix), source


# --------------------------------------------------------------------------------------------
# embedding
# --------------------------------------------------------------------------------------------


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
        compensation when absent), ``"none"``, or the path of a CSV spillover matrix whose
        header names the channels (``$PnN``).
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
        Base seed of the subsample (combined with the file name, see :func:`embed_flow_file`).
    drop_saturated
        Drop events at or above ``$PnR - 1`` on any channel used.
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
    max_events: int | None = 10_000
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
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            detail = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"FlowEmbedParams: invalid value(s): {detail}")
        if self.compensation not in ("file", "none") and not Path(self.compensation).is_file():
            raise ValueError(
                "FlowEmbedParams: compensation must be 'file', 'none' or an existing CSV file, "
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
        Float32 array (n_kept x d).
    event_ids
        Int64 indices of the kept events in the original file.
    feature_names
        Names of the columns (before PCA).
    channels
        Feature -> ``$PnN`` of the channel used.
    n_events
        Events in the file.
    qc
        Events dropped by each QC step, and kept.
    compensation
        Where the compensation came from (``"$SPILLOVER"``, a file path, or ``"none"``).
    """

    features: np.ndarray
    event_ids: np.ndarray
    feature_names: list[str]
    channels: dict[str, str]
    n_events: int
    qc: dict[str, int]
    compensation: str


def _scatter_channel(header: FcsHeader, letter: str) -> int | None:
    cands = [i for i, (n, k) in enumerate(zip(header.pnn, header.kinds, strict=True)) if k == "scatter"]
    cands = [i for i in cands if header.pnn[i].strip().lower().startswith(letter)]
    area = [i for i in cands if _is_area(header.pnn[i])]
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
            raise _fail(header.path, f"a {name} gate is set but the file has no {name} channel ($PnN: {header.pnn})")
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
        raise _fail(header.path, f"no event left after QC ({detail}, of {events.shape[0]} events)")
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
) -> FlowEmbedding:
    """Embed one FCS file and report how (see :func:`embed_flow_file`).

    Parameters
    ----------
    path
        The FCS file.
    params
        Embedding options.
    features
        Feature names, e.g. from :func:`resolve_panel`.
    seed_key
        Identifies the file in the subsample's seed; default the file name.

    Returns
    -------
    FlowEmbedding
        Features, original event indices and the QC report.
    """
    if not features:
        raise ValueError("embed_flow_file: no features given")
    header, events = read_fcs(path)
    mapping = channel_mapping(header, features, panel=params.panel)
    chans = [mapping[f] for f in features]
    comp = _compensation(header, params.compensation)
    used = list(chans) + (comp[0] if comp is not None else [])
    kept, qc = _event_qc(header, events, used, params)
    if params.max_events is not None and kept.size > params.max_events:
        rng = np.random.default_rng(derive_seed(params.seed, "flow-subsample", seed_key or header.path.name))
        kept = np.sort(rng.choice(kept, size=params.max_events, replace=False))
    qc["subsampled"] = int(kept.size)
    rows = events if kept.size == events.shape[0] else events[kept]
    del events
    compensated, pos = None, {}
    if comp is not None:
        comp_idx, inv, _ = comp
        compensated = rows[:, comp_idx] @ inv
        pos = {c: j for j, c in enumerate(comp_idx)}
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
        compensation=comp[2] if comp is not None else "none",
    )


def embed_flow_file(
    path: str | os.PathLike[str],
    params: FlowEmbedParams,
    *,
    features: list[str],
    seed_key: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed the events of one FCS file.

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
        Feature names, e.g. from :func:`resolve_panel`, in the order wanted.
    seed_key
        Identifies the file in the subsample's seed; default the file name.

    Returns
    -------
    features
        Float32 array (n_kept x d), d = ``len(features)`` (or the PCA's components).
    instance_ids
        Int64 indices of the kept events in the original file (sorted).

    Raises
    ------
    FlowFileError
        If the file is unreadable or inconsistent, lacks a feature, or no event passes QC.
    """
    emb = embed_flow_events(path, params, features=features, seed_key=seed_key)
    return emb.features, emb.event_ids


def write_flow_bag(
    fcs_path: str | os.PathLike[str],
    bag_path: str | os.PathLike[str],
    *,
    patient: str,
    label: str,
    params: FlowEmbedParams,
    features: list[str],
    truth: pd.DataFrame | None = None,
) -> None:
    """Embed one FCS file and write its bag (see ``docs/method.md``).

    Parameters
    ----------
    fcs_path
        The patient's FCS file.
    bag_path
        The ``.h5`` bag to write (atomically).
    patient, label
        Stored as attributes; ``patient`` also seeds the subsample.
    params
        Embedding options; the encoder is ``flow-<transform>``.
    features
        Feature names, e.g. from :func:`resolve_panel` (the same for every patient).
    truth
        Simulated data: the file's per-event truth indexed by event index
        (:func:`recipe_mil.simulate.flow.event_truth`), stored for the kept events as
        ``truth_{column}`` datasets; None for real data.

    Raises
    ------
    FlowFileError
        As :func:`embed_flow_file`.
    """
    emb = embed_flow_events(fcs_path, params, features=features, seed_key=str(patient))
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

    Returns
    -------
    FlowPCA
        To set as ``params.pca``.
    """
    from dataclasses import replace

    if not 1 <= n_components <= len(features):
        raise ValueError(f"n_components must be in [1, {len(features)}], got {n_components}")
    sub = replace(params, pca=None, max_events=events_per_file)
    x = np.concatenate([embed_flow_file(p, sub, features=features)[0] for p in paths]).astype(np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    logger.info("PCA fitted on %d events of %d files: %d components", x.shape[0], len(paths), n_components)
    return FlowPCA(list(features), mean, vt[:n_components].copy())
