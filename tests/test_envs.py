"""Static checks of the per-rule conda environments (no conda needed)."""

import ast
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "workflow" / "rules"
SRC = REPO / "src"

# import name -> conda package name
CONDA_NAME = {
    "sklearn": "scikit-learn",
    "torch": "pytorch",
    "yaml": "pyyaml",
    "matplotlib": "matplotlib-base",
    "PIL": "pillow",
    "umap": "umap-learn",
    "skimage": "scikit-image",
}


def rule_blocks():
    """(rule name, file, body) of every rule in the .smk files."""
    for smk in sorted(RULES.glob("*.smk")):
        text = smk.read_text()
        heads = list(re.finditer(r"^(\s*)rule\s*(\w*)\s*:", text, flags=re.M))
        for i, m in enumerate(heads):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            body = text[m.end() : end]
            name = m.group(2) or re.search(r"name:\s*\n?\s*f?\"([^\"]+)\"", body).group(1)
            yield name, smk, body


def directive(body, key):
    m = re.search(rf"^\s*{key}:\s*\n?\s*\"([^\"]+)\"", body, flags=re.M)
    return m.group(1) if m else None


def env_entries(env_file: Path) -> list[str]:
    """Conda and pip requirement strings of an env file."""
    out = []
    for d in yaml.safe_load(env_file.read_text())["dependencies"]:
        out += d["pip"] if isinstance(d, dict) else [d]
    return out


def env_packages(env_file: Path) -> set[str]:
    return {re.split(r"[=<>! ]", d, maxsplit=1)[0].lower() for d in env_entries(env_file)}


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.exists():
            return cand
    return None


def third_party_imports(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Top-level third-party modules imported by a file and, transitively, by the recipe_mil modules it uses."""
    seen = set() if seen is None else seen
    if path in seen:
        return set()
    seen.add(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            top = name.split(".")[0]
            if top == "recipe_mil":
                # importing a submodule executes every package __init__ on its path
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    f = module_file(".".join(parts[:i]))
                    if f:
                        found |= third_party_imports(f, seen)
            elif top == "_common":
                found |= third_party_imports(path.parent / "_common.py", seen)
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.add(top)
    return found


def test_every_rule_has_log_benchmark_and_existing_env():
    names = []
    for name, smk, body in rule_blocks():
        if name == "all":
            continue
        names.append(name)
        for key in ("log", "benchmark", "conda"):
            assert re.search(rf"^\s*{key}:", body, flags=re.M), f"rule {name} in {smk.name} lacks {key}:"
        env = (smk.parent / directive(body, "conda")).resolve()
        assert env.is_file(), f"rule {name}: conda env {env} does not exist"
        assert env_packages(env), f"{env} lists no packages"
    # generation and training: one rule per scenario family, defined in a loop (name f"..._{_family}")
    assert {"simulate_scrna", "splits", "recipes", "generate_{_family}", "train_mil_{_family}", "summary"} <= set(names)


def test_env_files_are_pinned():
    for env in sorted((REPO / "envs").glob("*.yaml")):
        for d in env_entries(env):
            assert re.search(r"[=<>]", d), f"{env.name}: {d!r} is not pinned"


def test_every_import_of_a_rule_script_is_in_its_env():
    for name, smk, body in rule_blocks():
        script = directive(body, "script")
        if script is None:
            continue
        env = (smk.parent / directive(body, "conda")).resolve()
        have = env_packages(env)
        needed = third_party_imports((smk.parent / script).resolve())
        missing = sorted(m for m in needed if CONDA_NAME.get(m, m) not in have)
        assert not missing, f"rule {name}: {script} imports {missing}, not in {env.name}"


# conda package name -> the distribution the test environment installs (pip name)
PIP_NAME = {"pytorch": "torch", "matplotlib-base": "matplotlib"}


def test_env_pins_match_the_tested_versions():
    """Every exact pin (``name=x.y``) of an env file is the major.minor (or more) of what the tests run."""
    from importlib.metadata import PackageNotFoundError, version

    checked = set()
    for env in sorted((REPO / "envs").glob("*.yaml")):
        for entry in env_entries(env):
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)==?([0-9][0-9.]*)", entry.strip())
            if not m:
                assert entry.startswith("pip"), f"{env.name}: {entry!r} is not an exact pin"
                continue
            name, pinned = m.groups()
            if name == "python":
                installed = ".".join(map(str, sys.version_info[:3]))
            else:
                try:
                    installed = version(PIP_NAME.get(name, name))
                except PackageNotFoundError:
                    raise AssertionError(f"{env.name}: {name} is not installed in the test environment") from None
            depth = max(2, len(pinned.split(".")))
            assert installed.split(".")[:depth] == pinned.split(".")[:depth], (
                f"{env.name}: {name}={pinned}, but the tests run {installed}"
            )
            checked.add(name)
    assert {"numpy", "pytorch", "anndata", "scikit-learn", "scanpy", "python"} <= checked


def test_rule_scripts_get_the_library_from_one_place():
    """Only ``_common.py`` touches ``sys.path`` (the workflow's own ``src/``), and every script imports it first."""
    scripts = REPO / "workflow" / "scripts"
    for script in sorted(scripts.glob("*.py")):
        text = script.read_text()
        if script.name == "_common.py":
            assert 'Path(__file__).resolve().parents[2] / "src"' in text
            continue
        assert "sys.path" not in text, f"{script.name} patches sys.path"
        first = next(line for line in text.splitlines() if line.startswith(("import ", "from ")))
        assert first.startswith("from _common import"), f"{script.name}: first import is {first!r}"
