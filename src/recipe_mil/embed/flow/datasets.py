"""The data sets of an FCS file: each HEADER checked, each TEXT segment parsed by flowio, one data set chosen.

A file may hold several data sets linked by ``$NEXTDATA``. They are reduced to one without asking
only when they are one sample at several resolutions (Beckman ``.lmd``); data sets of different
samples (a Guava Muse plate export) are refused, with their list, unless the sample sheet's
``dataset`` column chooses one.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipe_mil.embed.flow.errors import fail

logger = logging.getLogger(__name__)

_HEADER_BYTES = 58
_SUPPORTED_VERSIONS = ("2.0", "3.0", "3.1", "3.2")
_MAX_DATA_SETS = 1000
_IDENTITY_RE = re.compile(
    r"^(smno|wellid|src|fil|plateid|platename|tube ?name)$"
    r"|(^|[@ _-])(sample ?id\d*|sample ?name|specimen|well ?id|well|tube ?no|barcode)$"
)
_IDENTITY_ORDER = ("smno", "wellid", "fil", "src")


@dataclass(frozen=True)
class DataSetInfo:
    """One data set of an FCS file (see :func:`list_data_sets`).

    Attributes
    ----------
    index
        1-based position in the file (the sample sheet's ``dataset`` value that selects it).
    offset
        Byte offset of its HEADER.
    version
        Its FCS version.
    n_events, n_channels
        ``$TOT`` and ``$PAR``.
    identity
        Its sample-identifying keywords (``smno``, ``wellid``, ``fil``, ``src``, ``@sampleid1``...),
        lower-case without ``$`` as flowio names them, blank values left out.
    """

    index: int
    offset: int
    version: str
    n_events: int
    n_channels: int
    identity: dict[str, str]

    def describe(self) -> str:
        """One line: index, events, channels and up to four identifying keywords."""
        keys = [k for k in _IDENTITY_ORDER if k in self.identity]
        keys += [k for k in sorted(self.identity) if k not in keys]
        ids = ", ".join(f"{k.upper() if k.isalpha() else k}={self.identity[k]!r}" for k in keys[:4])
        return f"data set {self.index} (FCS {self.version}): {self.n_events} events x {self.n_channels} channels" + (
            f", {ids}" if ids else ""
        )


@dataclass
class DataSet:
    """One data set as read: its summary, its checked HEADER fields and its TEXT keywords."""

    info: DataSetInfo
    header: dict[str, Any]
    text: dict[str, str]


# --------------------------------------------------------------------------------------------
# HEADER and TEXT
# --------------------------------------------------------------------------------------------


def _header_fields(path: Path, raw: bytes, offset: int, size: int) -> dict[str, Any]:
    """Check the 58-byte HEADER of the data set at ``offset``; return its version and offsets."""
    where = f" (data set at byte {offset})" if offset else ""
    if len(raw) < _HEADER_BYTES:
        raise fail(path, f"truncated file: the FCS HEADER{where} needs {_HEADER_BYTES} bytes, found {len(raw)}")
    if not raw.startswith(b"FCS"):
        raise fail(path, f"not an FCS file or corrupted{where}: it starts with {raw[:6]!r}, not 'FCS'")
    version = raw[3:6].decode("ascii", "replace")
    if version not in _SUPPORTED_VERSIONS:
        raise fail(path, f"unsupported FCS version {version!r}{where} (supported: 2.0, 3.0, 3.1)")
    values: list[int | None] = []
    for i, name in enumerate(("TEXT start", "TEXT end", "DATA start", "DATA end")):
        chunk = raw[10 + 8 * i : 18 + 8 * i]
        try:
            values.append(int(chunk) if chunk.strip() else None)
        except ValueError:
            raise fail(
                path, f"corrupted FCS HEADER{where}: the {name} offset (bytes {10 + 8 * i}-{17 + 8 * i}) is {chunk!r}"
            ) from None
    text_start, text_stop, data_start, data_stop = values
    if text_start is None or text_stop is None:
        raise fail(path, f"corrupted FCS HEADER{where}: the TEXT offsets (bytes 10-25) are blank")
    if text_stop < text_start or text_start < _HEADER_BYTES:
        raise fail(path, f"corrupted FCS HEADER{where}: TEXT segment at bytes {text_start}-{text_stop}")
    if offset + text_stop >= size:
        raise fail(
            path,
            f"truncated file: the TEXT segment{where} should end at byte {offset + text_stop} "
            f"but the file has only {size} bytes",
        )
    blank = data_start is None or data_stop is None
    return {
        "version": version,
        "text_start": text_start,
        "text_stop": text_stop,
        "data_start": data_start or 0,
        "data_stop": data_stop or 0,
        "data_blank": blank,
    }


def flowio_source(path: Path, blank_at: list[int]) -> str | io.BytesIO:
    """Return the file for flowio: its path, or a copy whose blank HEADER DATA offsets read ``0``.

    flowio parses every HEADER field with ``int()``, which a blank field fails; ``0`` is what
    the FCS standard writes when the offsets are in the TEXT only.
    """
    if not blank_at:
        return str(path)
    data = bytearray(path.read_bytes())
    for offset in blank_at:
        data[offset + 26 : offset + 42] = f"{0:>8}{0:>8}".encode()
    buf = io.BytesIO(bytes(data))
    buf.name = str(path)
    return buf


def _read_text(path: Path, offset: int, header: Mapping[str, Any], size: int) -> dict[str, str]:
    """Parse the TEXT segment of the data set at ``offset`` with flowio (keywords lower-case, no ``$``)."""
    import flowio
    from flowio.exceptions import FlowIOException

    # flowio checks a DATA end against the file size even for the TEXT alone: let it check the
    # HEADER's when that fits (the TEXT's are checked below, with a clearer message).
    header_fits = header["version"] != "2.0" and offset + header["data_stop"] <= size
    try:
        fd = flowio.FlowData(
            flowio_source(path, [offset] if header["data_blank"] else []),
            only_text=True,
            nextdata_offset=offset,  # never None: a multi-data-set file is not an error here
            ignore_offset_discrepancy=True,
            ignore_offset_error=True,
            use_header_offsets=header_fits,
        )
    except FlowIOException as exc:
        if "greater than file size" in str(exc):
            end = offset + header["data_stop"]
            detail = f"at byte {end}" if end > size else "($ENDDATA) beyond the end of the file"
            missing = f" ({end + 1 - size} bytes missing)" if end > size else ""
            reason = f"truncated file: the DATA segment should end {detail} but the file has only {size} bytes{missing}"
            raise fail(path, reason) from exc
        raise fail(path, f"corrupted file: {exc}") from exc
    except KeyError as exc:
        key = str(exc.args[0]).upper()
        raise fail(
            path,
            f"corrupted TEXT segment: required keyword ${key} is missing (or written with spaces in its name, "
            "which flowio does not accept)",
        ) from exc
    except (ValueError, IndexError, EOFError, UnicodeDecodeError) as exc:
        raise fail(path, f"corrupted TEXT segment ({type(exc).__name__}: {exc})") from exc
    return dict(fd.text)


def int_keyword(path: Path, text: Mapping[str, str], key: str) -> int:
    """Return a required integer TEXT keyword (``key`` lower-case, without ``$``)."""
    if key not in text:
        raise fail(path, f"corrupted TEXT segment: required keyword ${key.upper()} is missing")
    try:
        return int(str(text[key]).strip())
    except ValueError:
        raise fail(path, f"corrupted TEXT segment: ${key.upper()} is {text[key]!r}, not an integer") from None


def float_keyword(path: Path, text: Mapping[str, str], key: str, default: float | None = None) -> float:
    """Return a numeric TEXT keyword; ``default`` when absent or blank (required when ``default`` is None)."""
    value = text.get(key)
    if value is None or not str(value).strip():
        if default is None:
            raise fail(path, f"corrupted TEXT segment: required keyword ${key.upper()} is missing")
        return default
    try:
        return float(str(value).strip())
    except ValueError:
        raise fail(path, f"corrupted TEXT segment: ${key.upper()} is {value!r}, not a number") from None


# --------------------------------------------------------------------------------------------
# data sets
# --------------------------------------------------------------------------------------------


def scan_data_sets(path: Path, size: int) -> list[DataSet]:
    """Follow ``$NEXTDATA`` through the file: every data set's HEADER and TEXT."""
    out: list[DataSet] = []
    offset = 0
    with path.open("rb") as fh:
        while True:
            fh.seek(offset)
            header = _header_fields(path, fh.read(_HEADER_BYTES), offset, size)
            text = _read_text(path, offset, header, size)
            identity = {k: str(v).strip() for k, v in text.items() if _IDENTITY_RE.search(k) and str(v).strip()}
            info = DataSetInfo(
                index=len(out) + 1,
                offset=offset,
                version=header["version"],
                n_events=int_keyword(path, text, "tot"),
                n_channels=int_keyword(path, text, "par"),
                identity=identity,
            )
            out.append(DataSet(info, header, text))
            raw_next = str(text.get("nextdata", "0")).strip() or "0"
            try:
                nxt = int(raw_next)
            except ValueError:
                raise fail(path, f"corrupted TEXT segment: $NEXTDATA is {raw_next!r}, not an integer") from None
            if nxt == 0:
                return out
            target = offset + nxt
            if nxt < 0 or target in {d.info.offset for d in out}:
                raise fail(path, f"corrupted TEXT segment: data set {len(out)}'s $NEXTDATA={nxt} points back")
            if target + _HEADER_BYTES > size:
                raise fail(
                    path,
                    f"truncated file: data set {len(out)}'s $NEXTDATA says another data set starts at byte {target}, "
                    f"but the file has only {size} bytes (a data set is missing)",
                )
            if len(out) >= _MAX_DATA_SETS:
                raise fail(path, f"more than {_MAX_DATA_SETS} data sets")
            offset = target


def list_data_sets(path: str | os.PathLike[str]) -> list[DataSetInfo]:
    """List the data sets of an FCS file (HEADER and TEXT only).

    Parameters
    ----------
    path
        An ``.fcs`` or ``.lmd`` file.

    Returns
    -------
    list[DataSetInfo]
        In file order; one element for an ordinary file.

    Raises
    ------
    FlowFileError
        If the file is missing, empty, or a HEADER or TEXT segment is broken.
    """
    p = Path(path)
    return [d.info for d in scan_data_sets(p, file_size(p))]


def _same_sample(sets: list[DataSet]) -> bool:
    """Whether several data sets hold one sample's events at several resolutions (Beckman ``.lmd``).

    Their ``$TOT`` are equal, no sample-identifying keyword differs between two of them, and their
    FCS versions differ (an ``.lmd`` stores FCS 2.0 then FCS 3.0). Equal counts alone are not
    enough: acquisitions are often stopped at a round number of events.
    """
    infos = [d.info for d in sets]
    if len({i.n_events for i in infos}) != 1 or len({i.version for i in infos}) != len(infos):
        return False
    keys = {k for i in infos for k in i.identity}
    return all(len({i.identity[k] for i in infos if k in i.identity}) <= 1 for k in keys)


def choose_data_set(path: Path, sets: list[DataSet], dataset: int | None) -> DataSet:
    """Return the data set to read: ``dataset`` (1-based), the only one, or one sample's best.

    Several data sets of one sample (see :func:`_same_sample`) give the highest FCS version; data
    sets of different samples without ``dataset`` are refused, listing them.
    """
    listing = "; ".join(d.info.describe() for d in sets)
    if dataset is not None:
        if not 1 <= dataset <= len(sets):
            raise fail(
                path, f"data set {dataset} asked for (sample sheet column 'dataset'), but the file holds: {listing}"
            )
        chosen = sets[dataset - 1]
        if len(sets) > 1:
            logger.info("%s: reading %s, as the sample sheet asks", path, chosen.info.describe())
        return chosen
    if len(sets) == 1:
        return sets[0]
    if _same_sample(sets):
        chosen = max(sets, key=lambda d: (d.info.version, -d.info.index))
        logger.info(
            "%s: %d data sets of the same %d events (FCS %s); reading data set %d (FCS %s)",
            path,
            len(sets),
            chosen.info.n_events,
            ", ".join(d.info.version for d in sets),
            chosen.info.index,
            chosen.info.version,
        )
        return chosen
    raise fail(
        path,
        f"the file holds {len(sets)} data sets of different samples; none is dropped silently: choose one per "
        f"patient with the sample sheet's 'dataset' column (1 to {len(sets)}; list the file on several rows, one "
        f"patient each, to keep several): {listing}",
    )


def file_size(p: Path) -> int:
    """Return the size of an existing, non-empty file, else raise a :class:`FlowFileError`."""
    if not p.is_file():
        raise fail(p, "FCS file does not exist")
    size = p.stat().st_size
    if size == 0:
        raise fail(p, "empty file (0 bytes)")
    return size
