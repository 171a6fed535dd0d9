"""Cut a single-data-set FCS file to its first N events, byte for byte (how some fixtures here were made).

Everything but three numbers is kept as written by the instrument: the HEADER, every TEXT keyword
(with its spelling, delimiter and padding), the data type, bit widths and byte order, and any quirk of
the DATA offsets (an ``$ENDDATA`` one byte too far stays one byte too far). Only ``$TOT``,
``$ENDDATA`` and the HEADER's DATA end change, each written zero-padded (TEXT) or space-padded (HEADER)
to its original width, so that no other offset moves. Bytes after the DATA segment are dropped.

Run: ``python tests/data/fcs/cut_fcs.py SOURCE.fcs DEST.fcs N_EVENTS``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def _keyword(text: bytes, delim: bytes, key: bytes) -> re.Match[bytes]:
    d = re.escape(delim)
    match = re.search(d + rb"\$" + key + d + rb"\s*(\d+)\s*(?=" + d + rb")", text, flags=re.IGNORECASE)
    if match is None:
        raise ValueError(f"keyword ${key.decode()} not found")
    return match


def _bytes_per_event(text: bytes, delim: bytes) -> int:
    d = re.escape(delim)
    datatype = re.search(d + rb"\$DATATYPE" + d + rb"\s*([A-Za-z])", text, flags=re.IGNORECASE).group(1).upper()
    n_par = int(_keyword(text, delim, b"PAR").group(1))
    if datatype == b"F":
        return 4 * n_par
    if datatype == b"D":
        return 8 * n_par
    bits = [int(_keyword(text, delim, b"P%dB" % i).group(1)) for i in range(1, n_par + 1)]
    return sum(bits) // 8


def _replace(buf: bytearray, match: re.Match[bytes], value: int, base: int) -> None:
    start, stop = match.span(1)
    width = stop - start
    new = f"{value:0{width}d}".encode()
    if len(new) != width:
        raise ValueError(f"{value} does not fit in {width} digits")
    buf[base + start : base + stop] = new


def cut_fcs(source: Path, dest: Path, n_events: int) -> None:
    """Write the first ``n_events`` events of ``source`` to ``dest``, keeping everything else."""
    raw = source.read_bytes()
    header = raw[:58]
    text_start, text_stop = int(header[10:18]), int(header[18:26])
    text = raw[text_start : text_stop + 1]
    delim = text[:1]
    bpe = _bytes_per_event(text, delim)
    tot = _keyword(text, delim, b"TOT")
    n_tot = int(tot.group(1))
    if not 0 < n_events < n_tot:
        raise ValueError(f"{source} has {n_tot} events; cannot cut to {n_events}")
    h_start, h_stop = int(header[26:34].strip() or 0), int(header[34:42].strip() or 0)
    size = n_events * bpe
    has_text_offsets = re.search(re.escape(delim) + rb"\$BEGINDATA" + re.escape(delim), text, flags=re.IGNORECASE)
    begin = int(_keyword(text, delim, b"BEGINDATA").group(1)) if has_text_offsets else h_start  # FCS 2.0: HEADER
    out = bytearray(raw[: begin + size])
    _replace(out, tot, n_events, text_start)
    if has_text_offsets:
        end = _keyword(text, delim, b"ENDDATA")
        delta = int(end.group(1)) - (begin + n_tot * bpe - 1)  # 0, or the writer's off-by-one
        _replace(out, end, begin + size - 1 + delta, text_start)
    if h_stop > 0:  # HEADER offsets given (not 0 or blank): same treatment
        delta = h_stop - (h_start + n_tot * bpe - 1)
        out[34:42] = f"{h_start + size - 1 + delta:>8}".encode()
    dest.write_bytes(bytes(out))


if __name__ == "__main__":
    cut_fcs(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
