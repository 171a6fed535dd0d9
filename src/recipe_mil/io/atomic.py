"""Atomic file writing: a file is either absent or complete, never half-written.

A file written here gets the permissions a plain ``open(path, "w")`` would give it (``0o666`` less the process
umask: group- and world-readable under the usual umask 022), not the owner-only ``0o600`` of
:func:`tempfile.mkstemp`. Temporary files are hidden siblings of their target (``.{name}.{random}.tmp``); one left
behind by a killed writer is removed the next time the same target is written.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_TMP_SUFFIX = ".tmp"
_TMP_RANDOM = r"[A-Za-z0-9_]{8}"  # tempfile's random part: 8 characters of [a-z0-9_]


@functools.cache
def process_umask() -> int:
    """Return the process umask, read once without changing it for other threads where the system allows.

    Linux shows it in ``/proc/self/status``; elsewhere it is read by setting it and putting it back at once
    (``os.umask`` has no read-only form).

    Returns
    -------
    int
        The umask, e.g. ``0o022``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """Return the mode a new file gets from ``open()``: ``0o666`` less the umask (``0o644`` under umask 022)."""
    return 0o666 & ~process_umask()


def _stale_temporaries(final: Path) -> list[Path]:
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.{_TMP_RANDOM}{re.escape(_TMP_SUFFIX)}$")
    try:
        return [p for p in final.parent.iterdir() if pattern.match(p.name)]
    except OSError:
        return []


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` and move it into place on success.

    Parameters
    ----------
    path
        Final destination. Its parent folder is created if needed (with the umask's mode).

    Yields
    ------
    Path
        A temporary file name in the same folder (same file system, so the final
        ``os.replace`` is atomic). On an exception the temporary file is removed and
        ``path`` is left untouched. Temporary files of the same destination left by an
        earlier writer that was killed (``kill -9``, out of memory) are removed first: one
        destination is written by one job at a time (Snakemake's lock sees to that).

    Notes
    -----
    The file moved into place gets :func:`default_file_mode`, the mode ``open()`` gives a
    new file, whatever the writer did to the temporary file.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale_temporaries(final):
        _remove(stale)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=_TMP_SUFFIX, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            os.chmod(tmp_path, default_file_mode())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            _remove(tmp_path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
