import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    ci_command = (REPO / ".ci/run").read_text().strip().splitlines()[-1]
    assert ci_command in (REPO / "README.md").read_text()


def test_every_config_key_is_documented():
    import yaml

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    doc = (REPO / "config/README.md").read_text()

    def keys(node, prefix=""):
        for name, sub in node.get("properties", {}).items():
            yield prefix + name, name
            yield from keys(sub, prefix + name + ".")
            if "additionalProperties" in sub and isinstance(sub["additionalProperties"], dict):
                yield from keys(sub["additionalProperties"], "")

    documented = set(re.findall(r"`([\w.]+)`", doc))
    missing = [full for full, name in keys(schema) if not any(name in d.split(".") for d in documented)]
    assert not missing, f"undocumented config keys: {missing}"


def project_files() -> list[Path]:
    """The repository's own files: tracked and untracked-but-not-ignored (no .venv, results, build output)."""
    import subprocess

    res = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if res.returncode == 0:
        return [REPO / p for p in res.stdout.split("\0") if p and (REPO / p).is_file()]
    skip = {".git", ".venv", "results", "logs", ".snakemake", "__pycache__"}
    return [
        p
        for p in REPO.rglob("*")
        if p.is_file() and not skip & set(p.relative_to(REPO).parts) and ".egg-info" not in str(p)
    ]


def test_the_project_stands_alone():
    """Nothing points outside the repository for its definition: the method is docs/method.md."""
    forbidden = ("../" + "shared", "DESIGN" + " §", "DESIGN" + ".md")
    hits = []
    for path in project_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        hits += [f"{path.relative_to(REPO)}: {word!r}" for word in forbidden if word in text]
    assert not hits, hits
    method = (REPO / "docs/method.md").read_text()
    for section in ("## 1 ", "## 2 ", "## 3 ", "## 4 ", "## 9 "):
        assert section in method
    for word in ("missing_class", "real_external", "recipe_selected", "Dirichlet-multinomial", "indptr"):
        assert word in method, word
    assert "transductive" in method  # the scRNA-seq preprocessing is fitted on all target cells, label-free
    # the README's leakage statement says it too, next to the rule, instead of claiming a leakage-free pipeline
    readme = (REPO / "README.md").read_text()
    readme = " ".join(readme.split())
    rule = readme.index("never enter a pool, a GMM, a recipe or a synthetic bag")
    assert "transductive" in readme[rule : rule + 800] and "test patients' cells included" in readme[rule : rule + 800]
