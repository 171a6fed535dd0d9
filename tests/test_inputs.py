"""Inputs and config as people really write them: every mistake caught before a job runs, results others can read.

Unit tests of the checks (config keys, names, sheets, bag files, encoder names, atomic writes, table reading, code
hashes) and Snakemake runs on tiny configs: planning that must fail before any job, one end-to-end run of a bags
dataset whose patients and class are called ``NA``, ``None``, ``nan``, and rerun detection after a library change.
"""

import copy
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

import test_robust
from recipe_mil.config_check import ConfigError, check_config, config_problems, validate_rows
from recipe_mil.embed.image import ImageEmbedParams, check_encoder_name, encoder_dim
from recipe_mil.io import atomic
from recipe_mil.io.atomic import atomic_path, write_text_atomic
from recipe_mil.io.bags import BagFileError, bag_shape, read_bag, write_bag
from recipe_mil.io.synthetic import read_recipes
from recipe_mil.io.tables import read_patients, read_tsv, write_tsv
from recipe_mil.names import SAFE_NAME, is_safe_name
from recipe_mil.provenance import code_version, library_files
from recipe_mil.sheets import SampleSheetError, check_bag_files, check_sheet, load_sheet
from recipe_mil.simulate.bags import simulate_bag_cohort
from test_robust import bags_config, fails_before_any_job, parse_jobs
from test_workflow import CI_PROFILE, REPO, TINY, snakemake, write_config

planner = test_robust.planner  # its module-scoped fixture: `snakemake -n` in one long-lived helper process

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
SAMPLES_SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "samples.schema.yaml").read_text())


# ----------------------------------------------------------------------------------------------
# 2. and 9. atomic writes: the umask's mode, no stale temporaries
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def umask():
    """``umask(mask)`` sets the process umask for the test (and what the writer reads); restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)
        atomic.process_umask.cache_clear()

    yield set_mask
    os.umask(old)
    atomic.process_umask.cache_clear()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_atomic_files_and_folders_get_the_umask_mode(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    assert atomic.process_umask() == mask
    text = tmp_path / "new" / "deeper" / "a.txt"
    write_text_atomic(text, "x")
    bag = tmp_path / "new" / "bag.h5"
    write_bag(bag, np.ones((3, 2)), ["a", "b", "c"], patient="p", label="l", encoder="e")
    with atomic_path(tmp_path / "new" / "rewritten.bin") as tmp:
        tmp.unlink()  # a writer that replaces the temporary file (as some libraries do) gets the same mode
        tmp.write_bytes(b"1")
        tmp.chmod(0o600)
    for path in (text, bag, tmp_path / "new" / "rewritten.bin"):
        assert mode(path) == file_mode, (path, oct(mode(path)))
    for folder in (tmp_path / "new", tmp_path / "new" / "deeper"):
        assert mode(folder) == dir_mode, (folder, oct(mode(folder)))


def test_atomic_path_removes_stale_temporaries_of_its_target_only(tmp_path):
    target = tmp_path / "pool.h5ad"
    stale_file = tmp_path / ".pool.h5ad.ab12cd_9.tmp"  # what a killed writer leaves (tempfile's 8 random chars)
    stale_file.write_bytes(b"half a pool")
    stale_dir = tmp_path / ".pool.h5ad.zzzzzzzz.tmp"
    (stale_dir / "inner").mkdir(parents=True)
    others = [
        tmp_path / ".pool.h5ad.gz.abcdefgh.tmp",  # another target's temporary
        tmp_path / ".pool.h5.abcdefgh.tmp",
        tmp_path / ".pool.h5ad.short.tmp",  # not a name atomic_path makes
        tmp_path / "pool.h5ad.abcdefgh.tmp",
    ]
    for other in others:
        other.write_bytes(b"keep")
    write_text_atomic(target, "done")
    assert target.read_text() == "done"
    assert not stale_file.exists() and not stale_dir.exists()
    assert all(other.exists() for other in others)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, *(o.name for o in others)])


def test_atomic_path_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


# ----------------------------------------------------------------------------------------------
# 3. closed config sections, did-you-mean; 5. safe names; 10. no hub encoders (library level)
# ----------------------------------------------------------------------------------------------


def test_shipped_configs_pass_the_config_check():
    for name in ("config.yaml", "benchmark.yaml", "scale_1m.yaml"):
        config = yaml.safe_load((REPO / "config" / name).read_text())
        assert config_problems(config, SCHEMA) == [], name


def _demo() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (lambda c: c.update(method=["real_only"]), "config: unknown key 'method' (did you mean 'methods'?)"),
        (
            lambda c: c.update(splits={"nfold": 5}),
            "config: unknown key 'splits.nfold' (did you mean 'splits.n_folds'?)",
        ),
        (lambda c: c.update(mil={"epoch": 3}), "config: unknown key 'mil.epoch' (did you mean 'mil.epochs'?)"),
        (
            lambda c: c.update(gmm={"n_component": 3}),
            "config: unknown key 'gmm.n_component' (did you mean 'gmm.n_components'?)",
        ),
        (
            lambda c: c.update(n_folds=3),
            "config: unknown key 'n_folds' (it belongs under 'splits': 'splits.n_folds')",
        ),
        (
            lambda c: c["scenarios"]["low_data"].update(draw=2),
            "config: unknown key 'scenarios.low_data.draw' (did you mean 'scenarios.low_data.draws'?)",
        ),
        (
            lambda c: c["scenarios"].update(missing_classes={"classes": ["healthy"]}),
            "config: unknown key 'scenarios.missing_classes' (did you mean 'scenarios.missing_class'?)",
        ),
        (
            lambda c: c["methods"].append("recipe_selectd"),
            "config: methods[9]: unknown method 'recipe_selectd' (did you mean 'recipe_selected'?)",
        ),
        (
            lambda c: c["datasets"]["demo_scrna"].update(sample="x.tsv"),
            "config: unknown key 'datasets.demo_scrna.sample' (did you mean 'datasets.demo_scrna.samples'?)",
        ),
        (
            lambda c: c["datasets"]["demo_scrna"]["scrna"].update(patient_ky="donor"),
            "config: unknown key 'datasets.demo_scrna.scrna.patient_ky' (did you mean "
            "'datasets.demo_scrna.scrna.patient_key'?)",
        ),
        (
            lambda c: c["datasets"]["demo_flow"]["flow"].update(panel=[{"marker": "CD3", "alias": ["CD3-A"]}]),
            "config: unknown key 'datasets.demo_flow.flow.panel[0].alias' (did you mean "
            "'datasets.demo_flow.flow.panel[0].aliases'?)",
        ),
        (
            lambda c: c["datasets"]["demo_scrna"]["simulate"].update(n_patient_per_class=3),
            "config: unknown key 'datasets.demo_scrna.simulate.n_patient_per_class' for the scrna simulator "
            "(did you mean 'datasets.demo_scrna.simulate.n_patients_per_class'?)",
        ),
        (
            lambda c: c["datasets"]["demo_flow"]["simulate"]["external"].update(batch_shift=0.5),
            "config: unknown key 'datasets.demo_flow.simulate.external.batch_shift' for the flow simulator",
        ),
    ],
)
def test_unknown_keys_are_named_with_a_hint(patch, message):
    config = _demo()
    patch(config)
    problems = config_problems(config, SCHEMA)
    assert problems == [message] or (message in problems[0] and len(problems) == 1), problems
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(config, SCHEMA)


def test_unsafe_dataset_and_class_names_and_hub_encoders_are_refused():
    config = _demo()
    config["datasets"]["../../../escaped_ds"] = config["datasets"].pop("demo_scrna")
    config["datasets"]["demo_flow"]["classes"] = ["healthy", "aml/x", ".low_blast"]
    config["datasets"]["demo_smear"]["image"] = {"encoder": "timm:hf-hub:someone/some-model"}
    problems = config_problems(config, SCHEMA)
    assert len(problems) == 4, problems
    expected = [
        "config: dataset name '../../../escaped_ds' is not a plain name",
        "config: datasets.demo_flow.classes: class name 'aml/x' is not a plain name",
        "config: datasets.demo_flow.classes: class name '.low_blast' is not a plain name",
        "config: datasets.demo_smear.image.encoder: image encoder 'timm:hf-hub:",
    ]
    assert all(any(p.startswith(e) for p in problems) for e in expected), problems


def test_safe_names():
    for good in ("P001", "NA", "None", "nan", "null", "a.b", "x-1_y+z", "_1", "-"):
        assert is_safe_name(good), good
    for bad in ("", "..", "../x", "a/b", ".hidden", "a..b", "a b", "a#b", "a\n", "é", None, 3):
        assert not is_safe_name(bad), bad


def test_schemas_use_the_library_safe_name_pattern():
    schema = yaml.safe_load(SCHEMA.read_text())
    ds = schema["properties"]["datasets"]
    assert ds["propertyNames"]["pattern"] == SAFE_NAME
    assert ds["additionalProperties"]["properties"]["classes"]["items"]["pattern"] == SAFE_NAME
    missing = schema["properties"]["scenarios"]["properties"]["missing_class"]["properties"]["classes"]
    assert missing["items"]["pattern"] == SAFE_NAME
    assert SAMPLES_SCHEMA["properties"]["patient"]["pattern"] == SAFE_NAME
    mil, gmm = schema["properties"]["mil"]["properties"], schema["properties"]["gmm"]["properties"]
    assert mil["device"]["pattern"] == gmm["device"]["pattern"]


def test_every_known_section_is_closed():
    """Every object in the schema with known keys says additionalProperties: false (simulate and scenarios excepted:
    recipe_mil.config_check closes them against the modality's simulator and the scenario registry)."""
    open_sections = []

    def walk(node, path):
        # scenarios: one key per registered family, closed by config_check against recipe_mil.scenarios.SCENARIOS
        if not isinstance(node, dict) or path.startswith("datasets.<name>.simulate") or path == "scenarios":
            return
        if "properties" in node and node.get("additionalProperties") is not False:
            open_sections.append(path or "<top>")
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{name}".lstrip("."))
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.<name>")
        for key in ("items",):
            walk(node.get(key), f"{path}[]")
        for branch in node.get("oneOf", []):
            walk(branch, path)

    walk(yaml.safe_load(SCHEMA.read_text()), "")
    assert open_sections == [], open_sections


@pytest.mark.parametrize(
    "name",
    [
        "timm:hf-hub:org/model",
        "timm:hf_hub:org/model",
        "timm:https://x.org/m.pth",
        "timm:local-dir:/models/x",
        "timm:org/model",
    ],
)
def test_hub_encoder_names_are_refused_before_timm_is_called(monkeypatch, name):
    import timm

    def no_network(*args, **kwargs):
        raise AssertionError("timm.create_model was called")

    monkeypatch.setattr(timm, "create_model", no_network)
    with pytest.raises(ValueError, match="nothing is ever downloaded"):
        check_encoder_name(name)
    with pytest.raises(ValueError, match="nothing is ever downloaded"):
        ImageEmbedParams(encoder=name)
    with pytest.raises(ValueError, match="nothing is ever downloaded"):
        encoder_dim(name)
    check_encoder_name("timm:vit_small_patch16_224.augreg_in21k")  # a plain architecture (and tag) is fine


# ----------------------------------------------------------------------------------------------
# 4. NA-like names in the workflow's own tables
# ----------------------------------------------------------------------------------------------


def test_read_tsv_keeps_na_like_ids_and_parses_numbers(tmp_path):
    frame = pd.DataFrame(
        {
            "patient": ["NA", "None", "nan", "null", "", "001"],
            "label": ["None", "NA", "a", "a", "b", "b"],
            "role": ["train"] * 6,
            "fold": [0, 1, 0, 1, 0, 1],
            "auroc": [0.5, np.nan, 1.0, 0.25, np.nan, 0.0],
            "missing_class": [None, None, "None", None, None, None],
        }
    )
    path = tmp_path / "t.tsv"
    frame.to_csv(path, sep="\t", index=False)
    back = read_tsv(path)
    assert back["patient"].tolist() == ["NA", "None", "nan", "null", "", "001"]
    assert back["label"].tolist() == ["None", "NA", "a", "a", "b", "b"]
    assert back["fold"].dtype.kind == "i" and back["auroc"].dtype.kind == "f"
    np.testing.assert_array_equal(back["auroc"].isna().to_numpy(), frame["auroc"].isna().to_numpy())
    assert back["missing_class"].tolist() == ["", "", "None", "", "", ""]
    default = pd.read_csv(path, sep="\t")  # what the scripts did before: ids lost
    assert default["patient"].isna().sum() == 5


def test_write_tsv_is_atomic_and_read_patients_reads_it_back(tmp_path):
    patients = pd.DataFrame(
        {"patient": ["NA", "p2"], "label": ["None", "a"], "cohort": ["target", "external"], "role": ["train", "test"]}
    )
    path = tmp_path / "run" / "patients.tsv"
    write_tsv(patients, path)
    assert path.read_text() == "patient\tlabel\tcohort\trole\nNA\tNone\ttarget\ttrain\np2\ta\texternal\ttest\n"
    pd.testing.assert_frame_equal(read_patients(path), patients)
    assert [p.name for p in path.parent.iterdir()] == ["patients.tsv"]  # no temporary file left
    write_tsv(patients.drop(columns="role"), path)
    with pytest.raises(ValueError, match=r"patients table .*patients.tsv: missing column\(s\) \['role'\]"):
        read_patients(path)


def test_every_table_is_written_by_write_tsv():
    """One atomic TSV writer: no library module or rule script pairs atomic_path with to_csv itself."""
    offenders = []
    for path in [*(REPO / "src").rglob("*.py"), *(REPO / "workflow" / "scripts").glob("*.py")]:
        if path.name == "tables.py":
            continue
        text = path.read_text()
        if "to_csv(" in text and "atomic_path" in text:
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_no_workflow_script_or_library_module_reads_tables_with_pandas_defaults():
    offenders = []
    call = re.compile(r"read_csv\((?:[^()]|\([^()]*\))*\)")
    for path in [*(REPO / "src").rglob("*.py"), *(REPO / "workflow" / "scripts").glob("*.py")]:
        for m in call.finditer(path.read_text()):
            if "keep_default_na=False" not in m.group(0):
                offenders.append(f"{path.relative_to(REPO)}: {m.group(0)}")
    # the one exception: a numeric spillover matrix (CSV, marker names as its header)
    assert [o for o in offenders if o.startswith("src/recipe_mil/embed/flow/compensation.py")] == offenders, offenders
    assert len(offenders) == 1


NA_NAMES = {"healthy_00": "NA", "healthy_01": "None", "healthy_02": "nan", "None_00": "null", "None_01": "N.A"}
"""Patient ids that pandas' default reader turns into NaN (and one that only looks like it)."""


@pytest.fixture(scope="module")
def na_run(tmp_path_factory):
    """A bags dataset whose class is called None and whose patients are called NA, None, nan, null, run to the end
    (real_only + recipe, 2 folds) under umask 022."""
    work = tmp_path_factory.mktemp("na_names")
    proportions = {"healthy": [0.45, 0.30, 0.15, 0.05, 0.05], "None": [0.15, 0.15, 0.15, 0.45, 0.10]}
    sheet, _ = simulate_bag_cohort(
        work / "input_bags", class_proportions=proportions, n_per_class=4, dim=6, size_range=(30, 50), seed=3
    )
    sheet["patient"] = sheet["patient"].replace(NA_NAMES)
    sheet.to_csv(work / "bags.tsv", sep="\t", index=False)
    config = {
        **copy.deepcopy(TINY),
        "datasets": {"na": {"modality": "bags", "classes": ["healthy", "None"], "samples": str(work / "bags.tsv")}},
        "scenarios": {"full": True},
        "methods": ["real_only", "recipe"],
        "gmm": {"n_components": [3], "n_init": 1},
        "mil": {
            "epochs": 3,
            "min_epochs": 1,
            "patience": 1,
            "hidden": 8,
            "attention_dim": 4,
            "device": "cpu",
            "n_seeds": 1,
        },
    }
    cfg = write_config(work, config)
    old = os.umask(0o022)
    try:
        res = snakemake(work, "--configfile", str(cfg), "--cores", "2", *CI_PROFILE, "results/summary.tsv")
    finally:
        os.umask(old)
    assert res.returncode == 0, res.stderr[-5000:]
    return work, sheet


def test_na_like_names_end_to_end(na_run):
    work, sheet = na_run
    summary = read_tsv(work / "results" / "summary.tsv")
    assert len(summary) == 2 * 2 and set(summary["method"]) == {"real_only", "recipe"}
    assert (summary["dataset"] == "na").all() and summary["balanced_accuracy"].between(0, 1).all()
    tested = []
    for fold in (0, 1):
        run = work / f"results/na/full/r0f{fold}"
        patients = read_tsv(run / "patients.tsv")
        assert sorted(patients["patient"]) == sorted(sheet["patient"])  # NA, None, nan, null kept, none empty
        assert set(patients["label"]) == {"healthy", "None"}
        recipes, _ = read_recipes(run / "recipes.json")
        assert set(recipes) == {"healthy", "None"}  # the class None is not dropped
        pooled = set(recipes["None"].patients) | set(recipes["healthy"].patients)
        assert pooled == set(patients.loc[patients["role"] == "train", "patient"])
        pred = read_tsv(run / "real_only" / "s0" / "predictions.tsv")
        assert set(pred["patient"]) == set(patients.loc[patients["role"] == "test", "patient"])
        tested += pred["patient"].tolist()
        assert set(pred["predicted"]) <= {"healthy", "None"} and "prob_None" in pred
    assert sorted(tested) == sorted(sheet["patient"])  # every patient tested once, under its own id
    splits = read_tsv(work / "results/na/splits.tsv")
    assert set(NA_NAMES.values()) <= set(splits["patient"])
    assert read_bag(work / "results/na/bags/NA.h5").patient == "NA"
    assert read_bag(work / "results/na/bags/null.h5").label == "None"


def test_results_are_readable_by_group_and_others_under_umask_022(na_run):
    work, _ = na_run
    files = [p for p in (work / "results").rglob("*") if p.is_file()]
    folders = [p for p in (work / "results").rglob("*") if p.is_dir()]
    assert len(files) > 30
    unreadable = [f"{p.relative_to(work)} {oct(mode(p))}" for p in files if mode(p) & 0o044 != 0o044]
    assert not unreadable, unreadable
    closed = [f"{p.relative_to(work)} {oct(mode(p))}" for p in folders if mode(p) & 0o055 != 0o055]
    assert not closed, closed
    assert not [p for p in files if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------
# 5., 6., 3., 10. refused at planning, before any job
# ----------------------------------------------------------------------------------------------


def test_dataset_name_that_escapes_the_working_folder(planner, tmp_path):
    work = tmp_path / "a" / "b" / "c" / "work"
    work.mkdir(parents=True)
    config, _ = bags_config(work)
    config["datasets"] = {"../../../escaped_ds": config["datasets"]["user_bags"]}
    fails_before_any_job(planner, work, config, "config: dataset name '../../../escaped_ds' is not a plain name")
    assert not (tmp_path / "a" / "escaped_ds").exists() and not (work / "logs").exists()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


def test_class_name_with_a_slash(planner, tmp_path):
    config, _ = bags_config(tmp_path)
    config["datasets"]["user_bags"]["classes"] = ["healthy", "dis/ease"]
    fails_before_any_job(planner, tmp_path, config, "datasets.user_bags.classes: class name 'dis/ease'")


def test_configured_class_without_patients(planner, tmp_path):
    config, _ = bags_config(tmp_path)
    config["datasets"]["user_bags"]["classes"] = ["healthy", "disease", "phantom"]
    fails_before_any_job(
        planner,
        tmp_path,
        config,
        "class 'phantom' of dataset 'user_bags' (datasets.user_bags.classes) has no target-cohort patient",
    )


@pytest.mark.parametrize(
    ("patch", "messages"),
    [
        ({"mil": {"epoch": 3}}, ["config: unknown key 'mil.epoch' (did you mean 'mil.epochs'?)"]),
        ({"method": ["real_only"]}, ["config: unknown key 'method' (did you mean 'methods'?)"]),
        ({"mil": {"device": "gpu"}}, ["Error validating config file", "'gpu' does not match"]),
    ],
)
def test_config_mistakes_fail_before_any_job(planner, tmp_path, patch, messages):
    config, _ = bags_config(tmp_path, **patch)
    fails_before_any_job(planner, tmp_path, config, *messages)


def test_hub_encoder_fails_before_any_job(planner, tmp_path):
    config = {
        "datasets": {
            "smear": {
                "modality": "image",
                "classes": ["healthy", "aml"],
                "simulate": {"n_patients_per_class": 2},
                "image": {"encoder": "timm:hf-hub:someone/model", "weights": "w.pth"},
            }
        },
        "splits": {"n_folds": 2},
    }
    fails_before_any_job(
        planner, tmp_path, config, "config: datasets.smear.image.encoder: image encoder 'timm:hf-hub:someone/model'"
    )


# ----------------------------------------------------------------------------------------------
# 7. messages that name the file and the line
# ----------------------------------------------------------------------------------------------


def _sheet_file(tmp_path: Path, body: str, name: str = "s.tsv") -> Path:
    path = tmp_path / name
    path.write_text("patient\tlabel\tpath\n" + body)
    return path


def test_malformed_line_names_the_file_and_line(tmp_path):
    path = _sheet_file(tmp_path, "P1\ta\tx\nP2\ta\tx\nP3\ta\tx\textra\n")
    with pytest.raises(SampleSheetError) as err:
        load_sheet(path, modality="bags")
    assert str(err.value).startswith(f"sample sheet {path}: malformed line (")
    assert "Expected 3 fields in line 4, saw 4" in str(err.value)


def test_non_utf8_sheet_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("patient\tlabel\tpath\nP1\ta\tx\nP2\tcaf\u00e9\tx\n".encode("latin-1"))
    with pytest.raises(SampleSheetError, match=re.escape(f"sample sheet {path}: not UTF-8 text (byte 0xe9 on line 3)")):
        load_sheet(path, modality="bags")
    bom = tmp_path / "bom.tsv"
    bom.write_bytes("\ufeffpatient\tlabel\tpath\nP1\ta\tx\n".encode())  # a spreadsheet's UTF-8 with BOM is fine
    assert load_sheet(bom, modality="bags")["patient"].tolist() == ["P1"]


def test_blank_line_between_patients_is_named_and_trailing_ones_are_fine(tmp_path):
    assert len(load_sheet(_sheet_file(tmp_path, "P1\ta\tx\nP2\ta\tx\n\n\n"), modality="bags")) == 2
    with pytest.raises(SampleSheetError, match=r"blank line\(s\) 3 between patients"):
        load_sheet(_sheet_file(tmp_path, "P1\ta\tx\n\nP2\ta\tx\n"), modality="bags")


def test_hash_in_a_path_is_data_and_in_an_id_is_refused_naming_the_line(tmp_path):
    folder = tmp_path / "run#2"
    folder.mkdir()
    paths = []
    for i in range(4):
        paths.append(folder / f"b{i}.h5")
        write_bag(paths[-1], np.ones((3, 2)), ["a", "b", "c"], patient=f"P{i}", label="a", encoder="e")
    rows = [f"P{i}\t{'a' if i < 2 else 'b'}\t{p}\n" for i, p in enumerate(paths)]
    rows[3] = rows[3].replace("P3", "P#3", 1)
    path = _sheet_file(tmp_path, "".join(rows))
    sheet = load_sheet(path, modality="bags")
    assert sheet["path"].tolist() == [str(p) for p in paths]  # '#' kept: not a comment
    with pytest.raises(SampleSheetError) as err:
        check_sheet(sheet, source=str(path), classes=["a", "b"], n_folds=1, file_paths=True)
    assert "patient id is not a plain name" in str(err.value) and "at line 5 (P#3)" in str(err.value)
    sheet.loc[3, "patient"] = "P3"
    check_sheet(sheet, source=str(path), classes=["a", "b"], n_folds=1, file_paths=True)  # the '#' paths exist


def test_sheet_schema_errors_name_the_file_and_line():
    sheet = pd.DataFrame(
        {"patient": ["P1", "P 2", "P3"], "label": ["a", "a", "b"], "path": ["x", "y", "z"], "cohort": ["target"] * 3}
    )
    sheet.loc[2, "cohort"] = "other"
    with pytest.raises(SampleSheetError) as err:
        validate_rows(sheet, SAMPLES_SCHEMA, source="sheets/s.tsv")
    msg = str(err.value)
    assert msg.startswith("sample sheet sheets/s.tsv:")
    assert "line 3 (P 2): patient: 'P 2' does not match" in msg
    assert "line 4 (P3): cohort: 'other' is not one of ['target', 'external']" in msg


def test_unsafe_patient_id_fails_before_any_job_naming_the_sheet_and_line(planner, tmp_path):
    config, sheet = bags_config(tmp_path)
    text = (tmp_path / "bags.tsv").read_text().replace("healthy_01", "../healthy_01", 1)
    (tmp_path / "bags.tsv").write_text(text)
    fails_before_any_job(
        planner, tmp_path, config, f"sample sheet {tmp_path / 'bags.tsv'}:", "at line 3 (../healthy_01)"
    )


def _bag_with(path: Path, make) -> Path:
    with h5py.File(path, "w") as f:
        make(f)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda f: f.create_group("features").create_dataset("x", data=np.ones((3, 2))), "is an HDF5 group"),
        (lambda f: f.create_dataset("features", data=np.ones((3, 2)) * (1 + 1j)), "complex"),
        (lambda f: f.create_dataset("features", data=np.array([[b"1", b"2"], [b"3", b"4"]])), "byte strings"),
        (
            lambda f: f.create_dataset(
                "features", data=np.array([["1", "2"]], dtype=object), dtype=h5py.string_dtype()
            ),
            "strings or objects",
        ),
        (lambda f: f.create_dataset("features", data=np.ones((3, 2), dtype=bool)), "booleans"),
    ],
)
def test_bag_features_that_are_no_real_matrix_are_refused_naming_the_file(tmp_path, make, message):
    path = _bag_with(tmp_path / "bad.h5", make)
    for read in (bag_shape, read_bag):
        with pytest.raises(BagFileError) as err:
            read(path)
        assert str(err.value).startswith(f"{path}: 'features' ") and message in str(err.value)
    sheet = pd.DataFrame({"patient": ["P1"], "label": ["a"], "path": [str(path)], "cohort": ["target"]})
    with pytest.raises(SampleSheetError, match=re.escape(f"line 2 (P1): {path}: 'features' ")):
        check_bag_files(sheet, source="s.tsv")


def test_integer_features_are_accepted(tmp_path):
    path = _bag_with(tmp_path / "int.h5", lambda f: f.create_dataset("features", data=np.arange(6).reshape(3, 2)))
    assert bag_shape(path) == (3, 2) and read_bag(path).features.dtype == np.float32


# ----------------------------------------------------------------------------------------------
# 8. library changes are visible to rerun detection
# ----------------------------------------------------------------------------------------------


def _copy_library(dest: Path) -> Path:
    shutil.copytree(REPO / "src" / "recipe_mil", dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_code_version_follows_the_scripts_imports(tmp_path):
    lib = _copy_library(tmp_path / "one" / "recipe_mil")
    other = _copy_library(tmp_path / "two" / "recipe_mil")
    scripts = REPO / "workflow" / "scripts"
    recipes, embed_image = scripts / "recipes.py", scripts / "embed_image.py"
    files = {p.relative_to(lib).as_posix() for p in library_files(recipes, lib)}
    assert {"__init__.py", "recipes/gmm.py", "recipes/pipeline.py", "io/tables.py", "seeds.py"} <= files
    assert not any(f.startswith("embed/image/") for f in files) and "mil/train.py" not in files
    before = {s: code_version(s, lib) for s in (recipes, embed_image)}
    assert before == {s: code_version(s, other) for s in (recipes, embed_image)}  # same code, any location
    with (lib / "recipes" / "gmm.py").open("a") as fh:
        fh.write("\n# a change\n")
    assert code_version(recipes, lib) != before[recipes]
    assert code_version(embed_image, lib) == before[embed_image]
    # a module reached only through a string (importlib) counts too: simulate/dataset.py -> simulate/flow/ (package)
    simulate = scripts / "simulate_files.py"
    sim_before = code_version(simulate, lib)
    with (lib / "simulate" / "flow" / "events.py").open("a") as fh:
        fh.write("\n# a change\n")
    assert code_version(simulate, lib) != sim_before


def test_library_change_reruns_the_jobs_that_run_it(tmp_path):
    """Snakemake (default rerun triggers) plans again the jobs whose library code changed, and only those."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for part in ("Snakefile", "workflow", "config", "envs", "profiles"):
        src = REPO / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / part)
    _copy_library(repo / "src" / "recipe_mil")
    work = tmp_path / "work"
    work.mkdir()
    config, _ = bags_config(work)
    cfg = write_config(work, config)
    targets = [f"results/user_bags/full/r0f{f}/patients.tsv" for f in (0, 1)]

    def smk(*args):
        cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(work)]
        res = subprocess.run(
            [*cmd, "--configfile", str(cfg), *args, *targets], capture_output=True, text=True, timeout=300, cwd=work
        )
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout + res.stderr

    smk("--cores", "1")
    assert "Nothing to be done" in smk("-n")
    with (repo / "src" / "recipe_mil" / "embed" / "image" / "embed.py").open("a") as fh:
        fh.write("\n# a change the splits never run\n")
    assert "Nothing to be done" in smk("-n")
    with (repo / "src" / "recipe_mil" / "splits.py").open("a") as fh:
        fh.write("\n# a change the splits run\n")
    out = smk("-n")
    planned = sorted(rule for rule, _ in parse_jobs(out)[0].values())
    assert planned == ["scenario_patients", "scenario_patients", "splits"], out[-3000:]
    assert "Params have changed since last execution" in out


# ----------------------------------------------------------------------------------------------
# 11. the trust boundary is documented
# ----------------------------------------------------------------------------------------------


def test_readme_states_the_trust_boundary():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Trust boundary", 1)[1].split("\n## ", 1)[0]
    assert "trusted input" in section and "__use_yte__" in section and "outside the working directory" in section


def test_bag_index_names_every_bag_with_its_shape(tmp_path):
    from recipe_mil.io.bags import read_bag_index, write_bag_index

    rng = np.random.default_rng(0)
    paths = []
    for patient, n in (("P1", 5), ("P2", 7)):
        paths.append(tmp_path / f"{patient}.h5")
        write_bag(
            paths[-1],
            rng.normal(size=(n, 3)).astype(np.float32),
            [f"{patient}:{i}" for i in range(n)],
            patient=patient,
            label="a",
            encoder="test",
        )
    index = write_bag_index(paths, tmp_path / "index.tsv")
    assert index[["patient", "n_instances", "n_features"]].values.tolist() == [["P1", 5, 3], ["P2", 7, 3]]
    assert read_bag_index(tmp_path / "index.tsv") == {"P1": str(paths[0]), "P2": str(paths[1])}
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically, nothing left behind
