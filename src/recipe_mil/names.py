"""Names that become parts of file paths: patient ids, dataset names, class names."""

from __future__ import annotations

import re

SAFE_NAME = r"^(?!.*\.\.)[A-Za-z0-9_+-][A-Za-z0-9_.+-]*$"
"""Letters, digits and ``_ . + -``; not starting with ``.`` and without ``..``: a name that is one plain file or
folder name, never a path (no ``/``), never hidden, never a way out of its folder. The JSON schemas in
``workflow/schemas`` use the same pattern (a test checks that they agree)."""

SAFE_NAME_RULE = "letters, digits and _ . + - only; not starting with '.', no '..'"
""":data:`SAFE_NAME` in words, for error messages."""

_SAFE = re.compile(SAFE_NAME)


def is_safe_name(name: object) -> bool:
    """Whether ``name`` is a string that matches :data:`SAFE_NAME`.

    Parameters
    ----------
    name
        A patient id, dataset name or class name (anything: a non-string is never safe).

    Returns
    -------
    bool
        True if ``name`` can be used as one component of a file path.
    """
    return isinstance(name, str) and _SAFE.fullmatch(name) is not None
