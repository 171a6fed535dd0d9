"""The library's layering: which package may import which (issue 17)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "recipe_mil"


def imported_modules(source: str, package: str) -> set[str]:
    """Every module a source imports, at any depth (relative imports resolved against ``package``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            mod = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return out


def file_imports(path: Path) -> set[str]:
    """:func:`imported_modules` of a library file."""
    return imported_modules(path.read_text(), ".".join(("recipe_mil", *path.relative_to(SRC).parent.parts)))


def test_imported_modules_sees_every_form():
    source = (
        "import recipe_mil.recipes.generate as g\nfrom ..recipes import recipes\n"
        "def f():\n    from recipe_mil.recipes.pool import build_pool\n"
    )
    mods = imported_modules(source, "recipe_mil.io")
    assert {"recipe_mil.recipes.generate", "recipe_mil.recipes", "recipe_mil.recipes.pool"} <= mods


@pytest.mark.parametrize("path", sorted((SRC / "io").glob("*.py")), ids=lambda p: p.name)
def test_io_imports_nothing_from_recipes(path):
    bad = sorted(m for m in file_imports(path) if m == "recipe_mil.recipes" or m.startswith("recipe_mil.recipes."))
    assert not bad, f"{path.name} imports {bad}"


def test_types_module_imports_no_library_module():
    mods = file_imports(SRC / "types.py")
    assert not [m for m in mods if m.startswith("recipe_mil")]


def test_old_locations_reexport_the_same_types():
    from recipe_mil import recipes, types
    from recipe_mil.recipes import generate
    from recipe_mil.recipes import recipes as rr

    assert generate.SyntheticSet is types.SyntheticSet is recipes.SyntheticSet
    assert rr.ClassRecipe is types.ClassRecipe is recipes.ClassRecipe
    assert rr.BagSizeModel is types.BagSizeModel is recipes.BagSizeModel


def test_no_library_file_is_over_600_lines():
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 600} == {}


def test_simulator_packages_keep_their_public_names():
    import recipe_mil.simulate.flow as flow
    import recipe_mil.simulate.image as image

    for package in (flow, image):
        assert all(hasattr(package, name) for name in package.__all__)
    assert flow.simulate_flow_cohort.__module__ == "recipe_mil.simulate.flow.cohort"
    assert image.render_cell.__module__ == "recipe_mil.simulate.image.render"
    # the truth readers the embed-flow job imports pull in no imaging library
    assert not any("PIL" in m for m in file_imports(SRC / "simulate" / "flow" / "truth.py"))


def test_importing_plots_leaves_the_matplotlib_backend_alone():
    import subprocess
    import sys

    code = "import matplotlib; matplotlib.use('svg'); import recipe_mil.plots; print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"
