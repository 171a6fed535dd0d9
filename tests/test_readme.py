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
