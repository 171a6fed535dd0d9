"""Compensation: the spillover matrix of the file (``$SPILLOVER``, ``$SPILL``, ``SPILL``) or of a CSV file.

``compensation`` is ``"file"`` (the file's matrix; a file without one, or whose keyword names
channels but holds no coefficients, as MACSQuant 3.1 exports do, is not compensated, with a
warning, and its bag says why), ``"file_strict"`` (the same, but those files fail), ``"none"``, or
the path of a CSV matrix.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recipe_mil.embed.flow.errors import fail
from recipe_mil.embed.flow.fcs import FcsHeader

logger = logging.getLogger(__name__)

COMPENSATION_MODES = ("file", "file_strict", "none")


def _match_names(header: FcsHeader, names: Sequence[str], source: str) -> list[int]:
    """Return the channel indices of a spillover matrix's names ($PnN, else $PnS, else 1-based numbers)."""
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
            raise fail(header.path, f"{source} names channel {name!r}, which is not in the file ($PnN: {header.pnn})")
    if len(set(out)) != len(out):
        raise fail(header.path, f"{source} names a channel twice: {list(names)}")
    return out


def parse_spillover(value: str) -> tuple[list[str], np.ndarray | None]:
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
        ``(n, n)`` spillover matrix, row = fluorochrome, column = detector; None when the
        value names the channels and stops there (MACSQuant 3.1: no compensation was set).

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
    if n > 0 and len(tokens) == 1 + n:
        return tokens[1:], None
    if n <= 0 or len(tokens) != 1 + n + n * n:
        raise ValueError(f"spillover value has {len(tokens)} fields; {1 + n + n * n} expected for {n} channels")
    names = tokens[1 : n + 1]
    try:
        matrix = np.array([float(t) for t in tokens[n + 1 :]], dtype=np.float64).reshape(n, n)
    except ValueError:
        raise ValueError("spillover value has non-numeric coefficients") from None
    return names, matrix


def file_spillover(header: FcsHeader) -> tuple[list[str], np.ndarray | None, str] | None:
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
        ``(names, matrix, keyword)`` (``matrix`` None when the keyword has no coefficients, see
        :func:`parse_spillover`), or None if the file has no spillover keyword.

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
            raise fail(header.path, f"malformed ${key.upper()} keyword: {exc}") from None
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
        If the file is missing or unreadable, or its values are not a square numeric matrix.
    """
    p = Path(path)
    if not p.is_file():
        raise fail(p, "compensation matrix file does not exist")
    try:
        df = pd.read_csv(p, sep=None, engine="python")
    except Exception as exc:
        raise fail(p, f"cannot read the compensation matrix ({exc})") from exc
    if df.shape[1] == df.shape[0] + 1:
        df = df.iloc[:, 1:]
    try:
        matrix = df.to_numpy(dtype=np.float64)
    except ValueError:
        raise fail(p, "compensation matrix has non-numeric values") from None
    if matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise fail(p, f"compensation matrix must be square with channel names as header, got shape {matrix.shape}")
    return [str(c).strip() for c in df.columns], matrix


def _compensation(header: FcsHeader, spec: str) -> tuple[list[int], np.ndarray, str] | None:
    """Channel indices, the inverse spillover matrix and a description, or None for no compensation."""
    if spec == "none":
        return None


@dataclass
class Compensation:
    """A spillover matrix matched to a file's channels.

    Attributes
    ----------
    channels
        0-based indices of the matrix's channels in the file, in the matrix's order.
    inverse
        Inverse of the spillover matrix: ``compensated = events[:, channels] @ inverse``.
    source
        Where it came from (``"$SPILLOVER"``, ``"$SPILL"`` or the CSV path).
    """

    channels: list[int]
    inverse: np.ndarray
    source: str

    def feeding(self, targets: Sequence[int]) -> list[int]:
        """Return the channels whose values enter the compensated value of at least one of ``targets``.

        Parameters
        ----------
        targets
            0-based channel indices (features).

        Returns
        -------
        list[int]
            0-based channel indices, in the matrix's order (a target in the matrix feeds itself).
        """
        cols = [j for j, c in enumerate(self.channels) if c in set(targets)]
        if not cols:
            return []
        rows = np.flatnonzero(np.any(self.inverse[:, cols] != 0, axis=1))
        return [self.channels[i] for i in rows]


def resolve_compensation(header: FcsHeader, spec: str) -> tuple[Compensation | None, str]:
    """Decide how one file is compensated.

    Parameters
    ----------
    header
        The file's header.
    spec
        ``"file"``, ``"file_strict"``, ``"none"`` or the path of a CSV spillover matrix.

    Returns
    -------
    compensation
        None when the file is not compensated.
    description
        For the bag's ``compensation`` attribute: the keyword or CSV path used, ``"none"``,
        ``"none (no spillover keyword in file)"`` or ``"none (empty spillover in file)"``.

    Raises
    ------
    FlowFileError
        If the matrix is malformed, names channels the file lacks, is singular, or (with
        ``"file_strict"``) the file has no usable matrix.
    """
    if spec == "none":
        return None, "none"
    if spec in ("file", "file_strict"):
        found = file_spillover(header)
        if found is None or found[1] is None:
            what = (
                "has no $SPILLOVER/$SPILL/SPILL keyword"
                if found is None
                else f"has a {found[2]} keyword naming channels {found[0]} but no coefficients"
            )
            if spec == "file_strict":
                raise fail(header.path, f"compensation 'file_strict': the file {what}")
            logger.warning("%s: compensation 'file' but the file %s; not compensated", header.path, what)
            return None, "none (no spillover keyword in file)" if found is None else "none (empty spillover in file)"
        names, matrix, source = found
        where = f"the {source} keyword"
    else:
        names, matrix = read_compensation_csv(spec)
        source = str(spec)
        where = f"compensation matrix {spec}"
    idx = _match_names(header, names, where)
    if not np.all(np.isfinite(matrix)):
        raise fail(header.path, f"{where} has non-finite values")
    if np.linalg.cond(matrix) > 1e12:
        raise fail(header.path, f"{where} is singular and cannot be inverted")
    return Compensation(idx, np.linalg.inv(matrix), source), source
