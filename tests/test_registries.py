"""A new method and a new scenario are one module plus one registration line each (issue 17)."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recipe_mil import methods, scenarios
from recipe_mil.methods import MethodSpec, methods_for
from recipe_mil.scenarios import ScenarioFamily, configured_scenarios, parse_scenario, scenario_pattern
from recipe_mil.simulate.bags import simulate_bag_cohort
from recipe_mil.splits import make_splits, scenario_patients
from test_workflow import TINY

REPO = Path(__file__).resolve().parents[1]

TOY_SCENARIO = '''"""A toy scenario: every second training patient of each class."""

from recipe_mil.scenarios import ScenarioFamily


def patients(out, sc, repeat, fold, seed):
    train = out[out["role"] == "train"]
    for _, group in train.groupby("label", sort=True):
        out.loc[group.index[1::2], "role"] = "unused"
    return out


FAMILY = ScenarioFamily("half", "half-k{n_per_class}", {"n_per_class": int},
                        configured=lambda s: [{"n_per_class": 2}] if s else [], patients=patients)
'''

TOY_METHOD = '''"""A toy method: synthetic patients of 20 random pool rows of their class."""

import numpy as np

from recipe_mil.methods import MethodSpec
from recipe_mil.types import SyntheticSet


def make(inp, seed):
    rng = np.random.default_rng(seed)
    labels = inp.pool.obs["label"].astype(str).to_numpy()
    bags, names = [], []
    for c in inp.present:
        rows = np.flatnonzero(labels == c)
        bags += [rng.choice(rows, size=20) for _ in range(inp.n_per_class)]
        names += [c] * inp.n_per_class
    return SyntheticSet.from_bags(bags, names)


METHOD = MethodSpec("toy_copy", generator="toy_copy", make=make)
'''


def test_a_registered_scenario_is_parsed_planned_and_builds_its_patients(monkeypatch, tmp_path):
    namespace: dict = {}
    exec(compile(TOY_SCENARIO, "toy_scenario", "exec"), namespace)  # the module's text, as the workflow test uses it
    monkeypatch.setitem(scenarios.SCENARIOS, "half", namespace["FAMILY"])
    assert parse_scenario("half-k2") == scenarios.Scenario("half", n_per_class=2)
    assert parse_scenario("half-k2").id == "half-k2"
    assert scenario_pattern("half") == r"half\-k\d+" and scenario_pattern().endswith(r"|half\-k\d+")
    assert configured_scenarios({"full": True, "half": True}) == ["full", "half-k2"]
    assert configured_scenarios({"full": False, "missing_class": {"classes": ["x"]}}, ["a", "b"]) == []
    assert methods_for(["real_only", "real_external", "recipe"], "half-k2") == ["real_only", "recipe"]
    sheet, _ = simulate_bag_cohort(
        tmp_path, class_proportions={"a": [0.5, 0.5], "b": [0.2, 0.8]}, n_per_class=8, dim=2, seed=0
    )
    splits = make_splits(sheet, n_folds=2, n_repeats=1, val_fraction=0.25, seed=0)
    full = scenario_patients(splits, repeat=0, fold=0, scenario="full", seed=0)
    half = scenario_patients(splits, repeat=0, fold=0, scenario="half-k2", seed=0)
    n_train = full[full["role"] == "train"].groupby("label").size()
    assert (half[half["role"] == "train"].groupby("label").size() == (n_train + 1) // 2).all()
    assert (half["role"] == "test").equals(full["role"] == "test")
    with pytest.raises(ValueError, match="its ids must start with its name"):
        scenarios.register_scenario(ScenarioFamily("other", "half"))
    with pytest.raises(ValueError, match="template's fields"):
        scenarios.register_scenario(ScenarioFamily("other", "other-{size}", {"size": int}))


def test_a_registered_method_runs_its_own_generator(monkeypatch):
    import anndata as ad

    from recipe_mil.augment import GeneratorInput, make_synthetic

    namespace: dict = {}
    exec(compile(TOY_METHOD, "toy_method", "exec"), namespace)
    spec = namespace["METHOD"]
    monkeypatch.setitem(methods.METHODS, spec.name, spec)
    obs = pd.DataFrame({"label": ["a"] * 30 + ["b"] * 30, "cohort": "target", "cluster": 0})
    pool = ad.AnnData(np.zeros((60, 2), np.float32), obs=obs.set_axis(obs.index.astype(str)))
    inp = GeneratorInput(pool, {}, None, ["a", "b"], {"generate": {"n_per_class": 3}})
    syn = make_synthetic("toy_copy", inp, seed=0)
    assert list(syn.label) == ["a"] * 3 + ["b"] * 3 and len(syn.indices) == 6 * 20
    assert (syn.indices[:60] < 30).all() and (syn.indices[60:] >= 30).all()
    assert methods_for(["toy_copy", "real_only"], "missing_class-a") == ["real_only", "toy_copy"]
    with pytest.raises(ValueError, match="unknown scenario families"):
        methods.register_method(MethodSpec("x", scenarios=("nowhere",)))


def register(path: Path, line: str) -> None:
    """Add one registration line at a registry's marker comment."""
    text = path.read_text()
    marker = next(m for m in text.splitlines() if m.startswith("# a new ") and m.endswith(" here"))
    path.write_text(text.replace(marker, f"{marker}\n{line}"))


def test_toy_method_and_scenario_run_through_a_tiny_workflow(tmp_path):
    """Copy the workflow and its library, add one module and one registration line each, run it to the summary."""
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".snakemake")
    for part in ("workflow", "src", "envs", "profiles"):
        shutil.copytree(REPO / part, repo / part, ignore=ignore)
    shutil.copy(REPO / "Snakefile", repo / "Snakefile")
    lib = repo / "src" / "recipe_mil"
    (lib / "toy_scenario.py").write_text(TOY_SCENARIO)
    (lib / "toy_method.py").write_text(TOY_METHOD)
    register(lib / "scenarios.py", 'register_scenario("recipe_mil.toy_scenario")')
    register(lib / "methods.py", 'register_method("recipe_mil.toy_method")')

    work = tmp_path / "work"
    sheet, _ = simulate_bag_cohort(
        work / "input_bags",
        class_proportions={"a": [0.5, 0.3, 0.2], "b": [0.2, 0.3, 0.5]},
        n_per_class=6,
        dim=4,
        size_range=(30, 50),
        seed=1,
    )
    sheet.to_csv(work / "bags.tsv", sep="\t", index=False)
    config = {
        **copy.deepcopy(TINY),
        "datasets": {"toy": {"modality": "bags", "classes": ["a", "b"], "samples": str(work / "bags.tsv")}},
        "scenarios": {"full": False, "half": True},
        "methods": ["real_only", "recipe", "toy_copy"],
        "gmm": {"n_components": [3], "n_init": 1},
        "mil": {**TINY["mil"], "epochs": 2, "n_seeds": 1, "hidden": 8, "attention_dim": 4},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(work)]
    cmd += ["--configfile", str(work / "config.yaml"), "--cores", "2", "--workflow-profile", str(repo / "profiles/ci")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=work)
    assert res.returncode == 0, res.stderr[-5000:]
    summary = pd.read_csv(work / "results/summary.tsv", sep="\t")
    assert set(summary["scenario"]) == {"half"} and (summary["n_per_class"] == 2).all()
    assert list(summary.groupby("method", sort=False).size().index) == ["real_only", "recipe", "toy_copy"]
    assert len(summary) == 3 * 2  # 3 methods x 2 folds x 1 seed
    toy = summary[summary["method"] == "toy_copy"]
    assert (toy["n_synthetic"] == 2 * config["generate"]["n_per_class"]).all()
    splits = pd.read_csv(work / "results/toy/splits.tsv", sep="\t")
    full = scenario_patients(splits, repeat=0, fold=0, scenario="full", seed=config["seed"])
    patients = pd.read_csv(work / "results/toy/half-k2/r0f0/patients.tsv", sep="\t")
    n_full = full[full["role"] == "train"].groupby("label").size()
    assert (patients[patients["role"] == "train"].groupby("label").size() == (n_full + 1) // 2).all()
    assert (work / "results/toy/half-k2/r0f0/synthetic/toy_copy.h5").is_file()
