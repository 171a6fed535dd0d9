"""Which code a workflow step runs, as a short hash, so that a code change reruns what it touches.

Snakemake reruns a job when its rule's ``params`` change (a default rerun trigger). Every rule that runs
library code passes ``code=code_version(<its script>)``: a hash of the script, the helper modules next to it
that it imports (``_common.py``) and the library's source files that it imports, directly or through other
library modules. Editing ``recipe_mil/recipes/gmm.py`` therefore
changes the hash of the ``recipes`` rule (and of every rule whose script reaches ``gmm.py``) and Snakemake
plans those jobs again, while embedding jobs that never import it stay done.

The imports are found statically (:mod:`ast`): ``import recipe_mil.x``, ``from recipe_mil.x import y`` and
relative imports anywhere in a file (also inside functions), and string constants that name a library module
(``importlib.import_module("recipe_mil.simulate.flow")``). Importing ``recipe_mil.a.b`` also runs
``recipe_mil/__init__.py`` and ``recipe_mil/a/__init__.py``, so those count too.
"""

from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path

PACKAGE = "recipe_mil"
PACKAGE_DIR = Path(__file__).resolve().parent
"""The library's source folder (``src/recipe_mil``)."""

_IMPORTS: dict[str, frozenset[str]] = {}  # sha256 of a file's text -> the module names it imports (parse once)


def _imports(source: bytes, module: str, is_package: bool) -> frozenset[str]:
    """Absolute names of the modules a source file imports (and of string constants naming library modules)."""
    key = hashlib.sha256(module.encode() + b"\0" + source).hexdigest()
    if key in _IMPORTS:
        return _IMPORTS[key]
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                stem = f"{base}.{node.module}" if node.module else base
            else:
                stem = node.module or ""
            names.add(stem)
            names.update(f"{stem}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(PACKAGE + "."):
            names.add(node.value)
    result = frozenset(names)
    _IMPORTS[key] = result
    return result


def _module_file(module: str, package_dir: Path) -> Path | None:
    """Return the source file of a library module (``None`` for a name that is no module: a class, a function)."""
    rel = module.split(".")[1:]
    base = package_dir.joinpath(*rel)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if rel and base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def script_files(script: str | os.PathLike[str]) -> list[Path]:
    """Return a script and the helper modules next to it that it imports (``from _common import start``)."""
    script = Path(script)
    names = _imports(script.read_bytes(), "__main__", False)
    helpers = {script.parent / f"{n}.py" for n in names if "." not in n and n != PACKAGE}
    return [script, *sorted(p for p in helpers if p.is_file() and p != script)]


def library_files(script: str | os.PathLike[str], package_dir: str | os.PathLike[str] = PACKAGE_DIR) -> list[Path]:
    """Return the library source files a script runs: its library imports, their imports, and so on.

    Parameters
    ----------
    script
        A Python file (a rule's script in ``workflow/scripts``, or a library module).
    package_dir
        The library's source folder, ``src/recipe_mil`` (another copy in tests).

    Returns
    -------
    list[Path]
        Sorted paths of the files under ``package_dir`` (with the package's ``__init__.py`` files).
    """
    package_dir = Path(package_dir)
    seen: set[Path] = set()
    todo = [(p, "__main__", False) for p in script_files(script)]
    while todo:
        path, module, is_package = todo.pop()
        for name in _imports(path.read_bytes(), module, is_package):
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ too
                sub = ".".join(parts[:i])
                found = _module_file(sub, package_dir)
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append((found, sub, found.name == "__init__.py"))
    return sorted(seen)


def code_version(script: str | os.PathLike[str], package_dir: str | os.PathLike[str] = PACKAGE_DIR) -> str:
    """Return a short hash of the code a script runs (see :func:`script_files` and :func:`library_files`).

    Parameters
    ----------
    script, package_dir
        As for :func:`library_files`.

    Returns
    -------
    str
        16 hex digits of the SHA-256 of the files' names (the script's and its helpers' file names, the library
        files' paths relative to ``package_dir``) and contents: the same for the same code wherever the
        repository is, different when the script, a helper it imports or any library file it reaches changes.
    """
    package_dir = Path(package_dir)
    named = [(f"scripts/{p.name}", p) for p in script_files(script)]
    named += [(f"{PACKAGE}/{p.relative_to(package_dir).as_posix()}", p) for p in library_files(script, package_dir)]
    digest = hashlib.sha256()
    for name, path in named:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
