"""One modality interface: the rules ask recipe_mil.modalities instead of branching on modality names (issue 17)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from recipe_mil import modalities
from recipe_mil.modalities import MODALITIES, TRUTH_COLUMNS, DatasetInputs, Modality
from recipe_mil.sheets import SampleSheetError, load_sheet
from recipe_mil.simulate.dataset import raw_location

REPO = Path(__file__).resolve().parents[1]
RULES = sorted((REPO / "workflow").glob("**/*.smk")) + [REPO / "workflow" / "Snakefile"]
SCRIPTS = sorted((REPO / "workflow" / "scripts").glob("*.py"))
NAMES = "|".join(MODALITIES)

TOY_MODALITY = '''"""A toy modality: one .toy file per patient with a collecting site, imported as a bag."""

from recipe_mil.modalities import Modality, Simulator

MODALITY = Modality(
    "toy",
    embed_rule="import_bag",
    sheet_columns={"site": "the collecting site"},
    simulator=Simulator("toy_sim", "ToyParams", "external_toy", rule="simulate_files", cohort="run", suffix=".toy"),
)
'''


@pytest.fixture
def toy(monkeypatch) -> Modality:
    """The toy modality, registered as a new module would be (its text, one registration)."""
    namespace: dict = {}
    exec(compile(TOY_MODALITY, "toy_modality", "exec"), namespace)
    spec = namespace["MODALITY"]
    monkeypatch.setitem(MODALITIES, spec.name, spec)
    return spec


def test_rules_and_scripts_hold_no_modality_or_simulation_branches():
    comparisons = [
        rf"(==|!=|\bin)\s*\(?\s*[\"']({NAMES})[\"']",  # x == "flow", x in ("scrna", ...)
        rf"[\"']({NAMES})[\"']\s*(==|!=|\bin\b)",  # "flow" == x, "flow" in x
        r"[\"']simulate[\"']\s+(not\s+)?in\b",  # "simulate" in ds
        r"\[[\"']modality[\"']\]\s*(==|!=|\bin\b)",  # ds["modality"] == ...
    ]
    found = [
        f"{path.relative_to(REPO)}:{i}: {line.strip()}"
        for path in RULES + SCRIPTS
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if not line.lstrip().startswith("#") and any(re.search(p, line) for p in comparisons)
    ]
    assert found == []


def test_every_modality_rule_picks_its_datasets_from_the_registry():
    embed = (REPO / "workflow" / "rules" / "embed.smk").read_text()
    simulate = (REPO / "workflow" / "rules" / "simulate.smk").read_text()
    for spec in MODALITIES.values():
        assert f'embedded_by("{spec.embed_rule}")' in embed, spec.name
        if spec.simulator is not None:
            assert f'simulated_by("{spec.simulator.rule}")' in simulate, spec.name


def test_the_registry_is_cheap_to_import_at_parse_time():
    heavy = ("torch", "anndata", "sklearn", "scanpy", "pandas", "h5py")
    code = f"import sys, recipe_mil.modalities; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_registered_modality_is_reported_by_the_interface(toy, tmp_path):
    given = DatasetInputs("d", {"modality": "toy", "classes": ["a", "b"], "samples": "sheet.tsv"}, "res")
    assert given.modality is toy and given.modality.embed_rule == "import_bag" and toy.path_names_file
    assert (given.simulated, given.sheet_file, given.simulate_rule, given.truth_columns) == (
        False,
        "sheet.tsv",
        None,
        (),
    )
    assert given.patient_inputs(["x/p1.toy", "x/p2.toy"]) == ["x/p1.toy", "x/p2.toy"]
    assert given.patient_input("x/p1.toy") == "x/p1.toy"
    simulated = DatasetInputs("d", {"modality": "toy", "classes": ["a", "b"], "simulate": {}}, "res")
    assert (simulated.simulated, simulated.sheet_file, simulated.simulate_rule) == (
        True,
        "res/d/raw/samples.tsv",
        "simulate_files",
    )
    assert simulated.patient_inputs(["x/p1.toy", "x/p2.toy"]) == ["res/d/raw/files"]
    assert simulated.truth_columns == TRUTH_COLUMNS
    assert raw_location("res/d/raw/files", "toy", "external", "P7") == "res/d/raw/files/external/P7.toy"
    assert "toy" in modalities.simulated_modalities()

    # its own sheet column is read (blank where not given); other modalities refuse it, and it refuses theirs
    for i in range(4):
        (tmp_path / f"p{i}.toy").write_text("x")
    rows = "".join(f"p{i}\t{'ab'[i % 2]}\t{tmp_path}/p{i}.toy\t{'s1' if i else ''}\n" for i in range(4))
    sheet_file = tmp_path / "sheet.tsv"
    sheet_file.write_text("patient\tlabel\tpath\tsite\n" + rows)
    sheet = load_sheet(sheet_file, modality="toy")
    assert list(sheet.columns) == ["patient", "label", "path", "cohort", "site"]
    assert list(sheet["site"]) == ["", "s1", "s1", "s1"]
    with pytest.raises(SampleSheetError, match=r"column 'site' \(the collecting site\) is for toy data only"):
        load_sheet(sheet_file, modality="bags")
    sheet_file.write_text("patient\tlabel\tpath\tdataset\n" + rows)
    with pytest.raises(SampleSheetError, match=r"column 'dataset' .* is for flow data only"):
        load_sheet(sheet_file, modality="toy")

    # the dataset's sheet is loaded and checked as the workflow does it (files must exist)
    sheet_file.write_text("patient\tlabel\tpath\n" + "".join(r.rsplit("\t", 1)[0] + "\n" for r in rows.splitlines()))
    ds = DatasetInputs("d", {"modality": "toy", "classes": ["a", "b"], "samples": str(sheet_file)})
    sheet, source = ds.load_sheet(n_folds=2)
    assert source == str(sheet_file) and list(sheet["patient"]) == ["p0", "p1", "p2", "p3"]
    (tmp_path / "p3.toy").unlink()
    with pytest.raises(SampleSheetError, match=r"path does not exist at line 5 \(p3"):
        ds.load_sheet(n_folds=2)


def test_unknown_modalities_and_cohort_files_without_a_patient_key_are_refused():
    assert [m for m, spec in MODALITIES.items() if spec.image_instances] == ["image"]
    with pytest.raises(ValueError, match="unknown modality 'nope'"):
        _ = DatasetInputs("d", {"modality": "nope"}).modality
    with pytest.raises(ValueError, match="need a patient_key"):
        modalities.register_modality(Modality("cells", "embed_scrna", cohort_files={"target": "h5ad"}))
