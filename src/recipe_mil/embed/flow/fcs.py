"""Reading FCS files: HEADER and TEXT checked against the file, the data set chosen, events from flowio.

flowio parses the TEXT segment and reads the events (with gain, log amplification and
``$TIMESTEP`` applied, as flowkit's ``source="raw"`` does). What is done here is what flowio
does not do, or does not say clearly:

- a HEADER that is short, not FCS, of an unknown version, or with blank or junk offsets gives an
  error naming the file and the bytes (flowio raises a bare ``ValueError``); blank DATA offsets
  are read through the TEXT's ``$BEGINDATA``/``$ENDDATA`` (the FCS 3.x way for large files);
- the DATA segment is located from the HEADER or the TEXT, whichever matches ``$TOT`` and fits in
  the file (writers get one or the other wrong), and a file whose size does not match ``$TOT`` is
  called truncated or inconsistent, with the numbers;
- every data set of a multi-data-set file is listed (flowio reads one or refuses), and several
  data sets are reduced to one only when they are one sample at two resolutions (Beckman
  ``.lmd``); otherwise the sample sheet must choose (``dataset`` column);
- integers of 24 bits (or any whole number of bytes that is not 8, 16 or 32), which flowio does not
  decode, are decoded here and handed to flowio's preprocessing; a ``$TIMESTEP`` that is not a
  number (an anonymised file) is ignored with a warning instead of failing the file.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recipe_mil.embed.flow.datasets import (
    DataSet,
    choose_data_set,
    file_size,
    float_keyword,
    flowio_source,
    int_keyword,
    scan_data_sets,
)
from recipe_mil.embed.flow.errors import fail
from recipe_mil.embed.flow.kinds import ChannelKind, Measure, classify_channel

logger = logging.getLogger(__name__)


@dataclass
class FcsHeader:
    """What an FCS file says about the data set read, checked against the file (no events read).

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
    kinds, measures, detectors
        Per channel: kind, pulse measure and detector from both names (see
        :func:`~recipe_mil.embed.flow.kinds.classify_channel`).
    ranges
        ``$PnR`` of every channel.
    tops
        Top of scale of every channel in the units of the read events (``$PnR`` divided by the
        gain, or ``log0 * 10**decades`` for log-amplified channels).
    saturation
        Value of ``$PnR - 1`` in the units of the read events: an event at or above it on a
        channel is saturated there.
    metadata
        TEXT keywords, lower-case and without ``$`` (flowio's convention).
    data_set
        1-based index of the data set read.
    data_set_offset
        Byte offset of that data set.
    data_start
        Byte offset (in the file) of its DATA segment.
    n_data_sets
        Number of data sets in the file.
    read_options
        Options passed to flowio to read the events (offset quirks).
    decode_integers
        Whether the integers are decoded here (bit widths flowio does not read, e.g. 24).
    ignore_timestep
        Whether ``$TIMESTEP`` is ignored (not a number).
    blank_data_offsets
        Whether the HEADER's DATA offsets are blank (read through the TEXT's).
    """

    path: Path
    version: str
    n_events: int
    pnn: list[str]
    pns: list[str]
    kinds: list[ChannelKind]
    measures: list[Measure]
    detectors: list[str]
    ranges: np.ndarray
    tops: np.ndarray
    saturation: np.ndarray
    metadata: dict[str, str]
    data_set: int = 1
    data_set_offset: int = 0
    data_start: int = 0
    n_data_sets: int = 1
    read_options: dict[str, bool] = field(default_factory=dict)
    decode_integers: bool = False
    ignore_timestep: bool = False
    blank_data_offsets: bool = False

    @property
    def n_channels(self) -> int:
        """Number of channels (``$PAR``)."""
        return len(self.pnn)

    def label(self, i: int) -> str:
        """``$PnN ($PnS)`` of channel ``i`` (0-based), or ``$PnN`` alone."""
        return f"{self.pnn[i]} ({self.pns[i]})" if self.pns[i] and self.pns[i] != self.pnn[i] else self.pnn[i]

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
            area = [i for i in idx if self.measures[i] in ("area", "")]
            for i in idx:
                if len(area) != 1 or i != area[0]:
                    out[i] = self.pnn[i]
        return out


def _bits(path: Path, text: Mapping[str, str], n_par: int) -> tuple[int, bool]:
    """Bytes per event, and whether the integers must be decoded here (widths flowio cannot read)."""
    datatype = str(text.get("datatype", "")).strip().upper()
    if datatype == "I":
        bits = [int_keyword(path, text, f"p{i}b") for i in range(1, n_par + 1)]
        odd = sorted({b for b in bits if b % 8 or not 8 <= b <= 64})
        if odd:
            raise fail(
                path,
                f"integer bit width(s) {odd} ($PnB) are not whole bytes (bit-packed): not supported "
                "(neither by flowio nor flowkit)",
            )
        return sum(bits) // 8, any(b not in (8, 16, 32) for b in bits)
    if datatype == "F":
        return 4 * n_par, False
    if datatype == "D":
        return 8 * n_par, False
    if datatype == "A":
        raise fail(path, "ASCII ($DATATYPE=A) event data is not supported")
    raise fail(path, f"corrupted TEXT segment: unknown $DATATYPE {text.get('datatype')!r}")


def _channel_scale(path: Path, text: Mapping[str, str], i: int, is_time: bool) -> tuple[float, float, float]:
    """Return ($PnR, top of scale, saturation threshold) of channel ``i`` (1-based) in read units."""
    pnr = float_keyword(path, text, f"p{i}r")
    decades, log0 = 0.0, 0.0
    pne = str(text.get(f"p{i}e", "0,0"))
    try:
        decades, log0 = (float(x) for x in pne.split(",")[:2])
    except ValueError:
        logger.warning("%s: $P%dE is %r; assuming linear", path, i, pne)
    if decades > 0 and log0 == 0:
        log0 = 1.0
    gain = float_keyword(path, text, f"p{i}g", 1.0)
    if is_time or gain == 0:
        gain = 1.0

    def preprocess(v: float) -> float:  # flowio's preprocessing of one stored value
        if decades > 0:
            v = 10 ** (decades * v / pnr) * log0
        return v / gain

    top = log0 * 10**decades / gain if decades > 0 else pnr / gain
    return pnr, top, preprocess(pnr - 1)


def _locate_data(path: Path, ds: DataSet, n_tot: int, bpe: int, size: int) -> tuple[int, dict[str, bool]]:
    """Find the DATA segment that matches ``$TOT`` in the file; return its first byte and flowio's options."""
    h, text, offset = ds.header, ds.text, ds.info.offset
    expected = n_tot * bpe
    candidates: list[tuple[str, int, int]] = []
    if h["version"] != "2.0":
        try:
            t = (int(str(text["begindata"]).strip()), int(str(text["enddata"]).strip()))
            if t != (0, 0):
                candidates.append(("TEXT", *t))
        except (KeyError, ValueError):
            pass
    if not h["data_blank"] and (h["data_start"], h["data_stop"]) != (0, 0):
        candidates.append(("HEADER", h["data_start"], h["data_stop"]))
    if not candidates:
        state = "blank" if h["data_blank"] else "0"
        raise fail(
            path,
            f"the HEADER's DATA offsets (bytes 26-41) are {state} and the TEXT has no $BEGINDATA/$ENDDATA: "
            "the DATA segment cannot be located",
        )

    def fits(start: int, stop: int) -> bool:  # the size of $TOT events, inside the file, not over the TEXT
        outside_text = start > h["text_stop"] or stop < h["text_start"]  # an .lmd may put its DATA first
        return stop - start + 1 in (expected, expected + 1) and outside_text and offset + start + expected <= size

    chosen = next((c for c in candidates if fits(c[1], c[2])), None)
    if chosen is None:
        source, start, stop = candidates[0]
        actual = stop - start + 1
        if offset + stop >= size + (actual == expected + 1):
            raise fail(
                path,
                f"truncated file: the DATA segment should end at byte {offset + stop} but the file has only {size} "
                f"bytes ({offset + stop + 1 - size} bytes missing)",
            )
        others = "".join(f"; the {s} says bytes {a}-{b}" for s, a, b in candidates[1:])
        raise fail(
            path,
            f"the TEXT segment does not match the DATA segment: $TOT={n_tot} events x {bpe} bytes "
            f"($PAR={text.get('par')}, $DATATYPE={text.get('datatype')}) = {expected} bytes, but the DATA segment "
            f"(bytes {start}-{stop}, from the {source}) holds {actual} bytes{others}",
        )
    source, start, stop = chosen
    options: dict[str, bool] = {}
    if h["data_blank"]:
        logger.warning(
            "%s: the HEADER's DATA offsets (bytes 26-41) are blank (a number, or 0 when only the TEXT holds them, "
            "is required); using $BEGINDATA/$ENDDATA from the TEXT",
            path,
        )
    if source == "TEXT" and (h["data_start"], h["data_stop"]) not in ((0, 0), (start, stop)):
        logger.warning(
            "%s: HEADER and TEXT disagree on the DATA offsets (HEADER bytes %d-%d, TEXT %d-%d); the TEXT's match "
            "$TOT, using them",
            path,
            h["data_start"],
            h["data_stop"],
            start,
            stop,
        )
        options["ignore_offset_discrepancy"] = True
    elif source == "TEXT" and (h["data_start"], h["data_stop"]) != (start, stop):
        options["ignore_offset_discrepancy"] = True  # HEADER offsets left at 0, as several writers do
    if source == "HEADER" and len(candidates) > 1:
        logger.warning("%s: HEADER and TEXT disagree on the DATA offsets; the HEADER's match $TOT, using them", path)
        options["use_header_offsets"] = True
    if stop - start + 1 == expected + 1:
        logger.warning("%s: the DATA end offset is off by one (a common writer quirk); reading anyway", path)
        options["ignore_offset_error"] = True
    return offset + start, options


def read_fcs_header(path: str | os.PathLike[str], dataset: int | None = None) -> FcsHeader:
    """Read and check an FCS file's HEADER and TEXT segments (no events are read).

    A file holding several data sets is read at ``dataset``; without one, it is read only when
    its data sets are one sample at several resolutions (Beckman ``.lmd``: FCS 2.0 then FCS 3.0 of
    the same events; the highest version is read) and refused, with the list of its data sets,
    when they are different samples.

    Parameters
    ----------
    path
        An ``.fcs`` or ``.lmd`` file.
    dataset
        1-based index of the data set to read (the sample sheet's ``dataset`` column); None:
        the only one, or as above.

    Returns
    -------
    FcsHeader
        Channels, ranges and keywords of the data set to read. How each channel was classified
        is logged (logger ``recipe_mil.embed.flow``).

    Raises
    ------
    FlowFileError
        If the file is missing, empty (0 bytes or ``$TOT=0``), truncated, corrupted, of an
        unsupported version or data type, if its TEXT segment disagrees with the size of its
        DATA segment, or if it holds data sets of several samples and ``dataset`` is not given.
    """
    p = Path(path)
    size = file_size(p)
    sets = scan_data_sets(p, size)
    ds = choose_data_set(p, sets, dataset)
    text = ds.text
    n_par, n_tot = ds.info.n_channels, ds.info.n_events
    if n_par <= 0:
        raise fail(p, f"corrupted TEXT segment: $PAR={n_par}")
    missing = [f"$P{i}N" for i in range(1, n_par + 1) if f"p{i}n" not in text]
    if missing:
        raise fail(p, f"corrupted TEXT segment: $PAR={n_par} but {', '.join(missing[:5])} missing")
    if n_tot == 0:
        raise fail(p, "empty file: 0 events ($TOT=0)")
    if n_tot < 0:
        raise fail(p, f"corrupted TEXT segment: $TOT={n_tot}")
    bpe, decode = _bits(p, text, n_par)
    data_start, options = _locate_data(p, ds, n_tot, bpe, size)
    timestep = str(text.get("timestep", "")).strip()
    ignore_timestep = False
    if timestep:
        try:
            float(timestep)
        except ValueError:
            logger.warning("%s: $TIMESTEP is %r, not a number; ignored (the time channel stays in ticks)", p, timestep)
            ignore_timestep = True
    if decode:
        order = str(text.get("byteord", "")).replace(" ", "")
        if order not in ("1,2,3,4", "1,2,3", "1,2", "1", "4,3,2,1", "3,2,1", "2,1"):
            raise fail(p, f"unsupported $BYTEORD {text.get('byteord')!r} for {bpe * 8 // n_par}-bit integers")
        logger.info("%s: integer widths flowio does not read ($PnB); decoding them here", p)

    pnn = [str(text[f"p{i}n"]).strip() for i in range(1, n_par + 1)]
    pns = [str(text.get(f"p{i}s", "")).strip() for i in range(1, n_par + 1)]
    infos = [classify_channel(n, s) for n, s in zip(pnn, pns, strict=True)]
    logger.info(
        "%s: channels: %s",
        p,
        ", ".join(
            f"{n} {c.kind}{' ' + c.measure if c.measure else ''}{' [' + c.note + ']' if c.note else ''}"
            for n, c in zip(pnn, infos, strict=True)
        ),
    )
    scales = np.array(
        [_channel_scale(p, text, i, infos[i - 1].kind == "time") for i in range(1, n_par + 1)], dtype=np.float64
    )
    return FcsHeader(
        path=p,
        version=ds.info.version,
        n_events=n_tot,
        pnn=pnn,
        pns=pns,
        kinds=[c.kind for c in infos],
        measures=[c.measure for c in infos],
        detectors=[c.detector for c in infos],
        ranges=scales[:, 0],
        tops=scales[:, 1],
        saturation=scales[:, 2],
        metadata=text,
        data_set=ds.info.index,
        data_set_offset=ds.info.offset,
        data_start=data_start,
        n_data_sets=len(sets),
        read_options=options,
        decode_integers=decode,
        ignore_timestep=ignore_timestep,
        blank_data_offsets=ds.header["data_blank"],
    )


def _decode_integers(header: FcsHeader) -> np.ndarray:
    """Decode whole-byte integers of any width (24 bits...) as flowio would, masked to ``$PnR``."""
    text = header.metadata
    widths = [int(text[f"p{i}b"]) // 8 for i in range(1, header.n_channels + 1)]
    big = str(text.get("byteord", "")).replace(" ", "").startswith(("4", "3", "2"))
    n, bpe = header.n_events, sum(widths)
    with header.path.open("rb") as fh:
        fh.seek(header.data_start)
        raw = np.frombuffer(fh.read(n * bpe), dtype=np.uint8).reshape(n, bpe)
    out = np.zeros((n, len(widths)), dtype=np.uint64)
    pos = 0
    for j, w in enumerate(widths):
        order = range(pos, pos + w) if big else range(pos + w - 1, pos - 1, -1)
        for k in order:
            out[:, j] = (out[:, j] << np.uint64(8)) | raw[:, k]
        top = 1 << max(int(header.ranges[j]) - 1, 0).bit_length()  # $PnR rounded up to a power of 2
        if top < 1 << (8 * w):
            out[:, j] &= np.uint64(top - 1)
        pos += w
    return out.astype(np.float64).ravel()


def read_fcs(path: str | os.PathLike[str], dataset: int | None = None) -> tuple[FcsHeader, np.ndarray]:
    """Read an FCS file's events with flowio (24-bit and other odd integer widths decoded here).

    Parameters
    ----------
    path
        An ``.fcs`` or ``.lmd`` file.
    dataset
        See :func:`read_fcs_header`.

    Returns
    -------
    header
        See :func:`read_fcs_header`.
    events
        Float64 array (``$TOT`` x ``$PAR``), uncompensated, with gain, log amplification and
        ``$TIMESTEP`` applied (flowio's preprocessing, which is flowkit's ``source="raw"``).

    Raises
    ------
    FlowFileError
        As :func:`read_fcs_header`, or if flowio cannot parse the events.
    """
    import flowio

    header = read_fcs_header(path, dataset)
    p = header.path
    try:
        with warnings.catch_warnings():  # flowio warns about offset quirks, already logged above
            warnings.filterwarnings("ignore", category=UserWarning, module="flowio")
            data = flowio.FlowData(
                flowio_source(p, [header.data_set_offset] if header.blank_data_offsets else []),
                nextdata_offset=header.data_set_offset,
                only_text=header.decode_integers,
                **header.read_options,
            )
            if header.decode_integers:
                data.events = _decode_integers(header)
            if header.ignore_timestep:
                data.text.pop("timestep", None)
            events = np.asarray(data.as_array(preprocess=True), dtype=np.float64)
    except MemoryError:
        raise
    except Exception as exc:  # flowio raises many types on malformed input
        raise fail(p, f"corrupted file: cannot read the events ({type(exc).__name__}: {exc})") from exc
    if events.shape != (header.n_events, header.n_channels):
        raise fail(
            p,
            f"the TEXT segment does not match the DATA segment: expected {header.n_events} events x "
            f"{header.n_channels} channels, read {events.shape[0]} x {events.shape[1] if events.ndim == 2 else 0}",
        )
    return header, events
