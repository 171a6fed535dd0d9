"""Schema defaults equal the library's dataclass defaults, and the typed config is built from a config."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from recipe_mil.config import SECTIONS, MilConfig, StudyConfig, TrainConfig
from recipe_mil.embed.flow import FlowEmbedParams
from recipe_mil.embed.image import ImageEmbedParams
from recipe_mil.embed.scrna import ScrnaEmbedParams
from recipe_mil.recipes.pipeline import RecipeConfig

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
DATASET = SCHEMA["properties"]["datasets"]["additionalProperties"]["properties"]
WORKFLOW_ONLY = {"image.patients_per_job"}  # read by the rules (jobs per batch of patients), not the library


def schema_defaults(section: dict[str, Any]) -> dict[str, Any]:
    return {k: v["default"] for k, v in section["properties"].items() if "default" in v}


def dataclass_defaults(kind: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(kind):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def same(a: Any, b: Any) -> bool:
    """Equal as config values (a YAML list and a tuple default are the same)."""
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return list(a) == list(b)
    return type(a) is type(b) and a == b or isinstance(a, int | float) and isinstance(b, float) and a == b


CASES = [
    *((name, SCHEMA["properties"][name], kind) for name, kind in SECTIONS.items() if name != "mil"),
    *((name, SCHEMA["properties"][name], RecipeConfig) for name in ("pool", "gmm", "recipes")),
    ("flow", DATASET["flow"], FlowEmbedParams),
    ("image", DATASET["image"], ImageEmbedParams),
    ("scrna", DATASET["scrna"], ScrnaEmbedParams),
]


@pytest.mark.parametrize(("name", "section", "kind"), CASES, ids=[c[0] for c in CASES])
def test_schema_default_equals_dataclass_default(name, section, kind):
    schema = schema_defaults(section)
    library = dataclass_defaults(kind)
    assert schema, f"schema section {name} has no defaults"
    missing = sorted(k for k in schema if k not in library and f"{name}.{k}" not in WORKFLOW_ONLY)
    assert not missing, f"{name}: schema keys without a {kind.__name__} field: {missing}"
    differ = {k: (v, library[k]) for k, v in schema.items() if k in library and not same(v, library[k])}
    assert not differ, f"{name}: schema default vs {kind.__name__} default: {differ}"


def test_mil_schema_defaults_equal_mil_config():
    schema = schema_defaults(SCHEMA["properties"]["mil"])
    library = MilConfig().to_dict()
    assert set(schema) == set(library)
    assert {k: v for k, v in schema.items() if not same(v, library[k])} == {}
    # the model's own defaults are the training defaults
    from recipe_mil.mil import GatedAttentionMIL

    model = GatedAttentionMIL(4, 2)
    assert (model.hidden, model.attention_dim) == (TrainConfig.hidden, TrainConfig.attention_dim) == (64, 32)
    # and so are those of `recipe-mil train`
    from recipe_mil.cli import TRAIN_OPTIONS

    assert {name: default for name, _, default in TRAIN_OPTIONS} == {k: schema[k] for k, _, _ in TRAIN_OPTIONS}


def test_every_schema_section_with_defaults_is_covered():
    covered = {c[0] for c in CASES} | {"mil"}
    # seed/console are scalars; splits, scenarios and realism travel to the rules as values, not dataclasses; part and
    # parts select what the workflow plans (recipe_mil.study.study_part, tested in test_study_parts)
    rest = {"seed", "console", "export", "datasets", "methods", "splits", "scenarios", "realism", "part", "parts"}
    assert set(SCHEMA["properties"]) - covered == rest


def test_study_config_from_config_types_every_section():
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    study = StudyConfig.from_config(cfg)
    assert study.seed == 0
    assert study.generate.n_per_class == 10 and study.generate.missing_class_source == "target"
    assert study.select.oversample == 3 and study.select.unseen_class == "cross_fit"
    assert study.remix.modes == ("replace", "append", "interpolate", "covary")
    assert study.psemix.n_pseudo == 4
    assert study.mil.n_seeds == 2 and study.mil.train.hidden == 64 and study.mil.train.epochs == 150
    job = study.mil.train_config(seed=17, threads=2)
    assert (job.seed, job.threads, job.lr, job.device) == (17, 2, 0.002, "auto")
    assert study.mil.to_dict() == cfg["mil"]
    # an empty config is every default
    assert StudyConfig.from_config({"datasets": {}}) == StudyConfig()
    with pytest.raises(TypeError, match="mil: unknown keys"):
        MilConfig.from_dict({"epoch": 3})
    with pytest.raises(TypeError):
        StudyConfig.from_config({"generate": {"n_per_klass": 3}})
    with pytest.raises(ValueError, match="selection policy"):
        StudyConfig.from_config({"select": {"policy": "random"}})


def test_rule_scripts_pass_typed_sections_not_dict_lookups():
    """The generate, select, remix, psemix and mil sections reach the library as recipe_mil.config dataclasses."""
    sections = "|".join(SECTIONS)
    lookup = re.compile(rf"\b(?:p|params|snakemake\.params)\.(?:{sections}|config)\[")
    found = [
        f"{path.name}:{i}: {line.strip()}"
        for path in sorted((ROOT / "workflow" / "scripts").glob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if lookup.search(line)
    ]
    assert found == []
    for script in ("generate.py", "train_mil.py"):
        assert "StudyConfig.from_config(" in (ROOT / "workflow" / "scripts" / script).read_text(), script
