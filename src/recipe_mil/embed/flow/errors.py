"""The error every flow-cytometry reading or embedding step raises for a bad file."""

from __future__ import annotations

import os


class FlowFileError(ValueError):
    """An FCS file is unreadable, inconsistent, empty or lacks what the embedding needs.

    The message starts with the file's path and says why.
    """


def fail(path: str | os.PathLike[str], reason: str) -> FlowFileError:
    """Return a :class:`FlowFileError` whose message is ``"<path>: <reason>"``."""
    return FlowFileError(f"{path}: {reason}")
