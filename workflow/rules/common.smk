# Sheets, validation, input functions and wildcard constraints. Functions live here only.
import io
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path

import pandas as pd
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger as snakemake_logger
from snakemake.sourcecache import HostingProviderFile, LocalSourceFile
from snakemake.utils import validate


def library_src():
    """The ``src/`` folder of this workflow's own copy of the recipe_mil library.

    Computed from this file's location, not from ``workflow.basedir`` (which is the deploying project's folder when
    the workflow is used as a module), so that the library needs no pip install. A local workflow (a clone, a local
    ``module`` path) has it on disk. A remote module (``github(...)``/``gitlab(...)``, as written by
    ``snakedeploy deploy-workflow``) has only the files Snakemake fetches: ``src/`` is extracted from the module's
    git ref next to the fetched rule scripts, where ``workflow/scripts/_common.py`` looks for it in every job.
    """
    here = workflow.current_basedir  # workflow/rules of this workflow, also inside a module
    if isinstance(here, LocalSourceFile):
        return Path(here.get_path_or_uri(secret_free=True)).parents[1] / "src"
    if not isinstance(here, HostingProviderFile):
        raise WorkflowError(
            f"recipe-mil: cannot find the library of a workflow loaded from {here.get_path_or_uri(secret_free=True)}"
            "; use a local path or github(...)/gitlab(...) in the module statement"
        )
    src = Path(workflow.source_path("../scripts/_common.py")).parents[2] / "src"
    if not (src / "recipe_mil" / "__init__.py").is_file():
        tar = here.hosted_repo.repo.git.archive(here.ref, "src", format="tar", stdout_as_string=False)
        tmp = src.with_name(f"src.tmp{os.getpid()}")
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            archive.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        try:
            (tmp / "src").rename(src)  # atomic: a concurrent job sees the whole tree or none
        except OSError:  # another job extracted it first
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    return src


LIBRARY_SRC = library_src()
sys.path.insert(0, str(LIBRARY_SRC))

from recipe_mil.config_check import check_config, validate_rows  # noqa: E402
from recipe_mil.modalities import DatasetInputs  # noqa: E402
from recipe_mil.provenance import code_version  # noqa: E402
from recipe_mil.methods import AUGMENTED_METHODS, METHODS, generators_for, methods_for  # noqa: E402
from recipe_mil.console import install_compact_console  # noqa: E402
from recipe_mil.scenarios import SCENARIOS, configured_scenarios, parse_scenario, scenario_family  # noqa: E402
from recipe_mil.scenarios import scenario_pattern  # noqa: E402
from recipe_mil.splits import make_splits  # noqa: E402
from recipe_mil.study import study_part  # noqa: E402


# this workflow's own schema files (a local copy also when the workflow is a remote module)
CONFIG_SCHEMA = Path(workflow.source_path("../schemas/config.schema.yaml"))
# our checks first (unknown keys with a did-you-mean hint, unsafe names, hub encoders), then the schema's values
check_config(config, CONFIG_SCHEMA)
validate(config, schema="../schemas/config.schema.yaml")
SAMPLES_SCHEMA = yaml.safe_load(Path(workflow.source_path("../schemas/samples.schema.yaml")).read_text())

if config["console"] == "compact":
    install_compact_console(snakemake_logger, lambda: workflow.dryrun)

RESULTS = "results"
# a study in parts: `part: <name>` runs the datasets and scenario families of one entry of `parts` and writes its
# summary to results/parts/<name>/ (recipe_mil.study; README "The full study")
try:
    PART = study_part(config)
except ValueError as exc:
    raise WorkflowError(f"recipe-mil config: {exc}") from None
SUMMARY = f"{RESULTS}/parts/{PART.name}" if PART else RESULTS
SUMMARY_LOGS = f"logs/parts/{PART.name}" if PART else "logs"


def code(script):
    """Hash of the code a rule's script runs (the script, its helpers, the library modules it reaches).

    Passed as ``params: code=...`` so that Snakemake's params rerun trigger reruns a rule's jobs when that code
    changes (README: "Code changes rerun what they touch")."""
    return code_version(Path(workflow.source_path(f"../scripts/{script}")), LIBRARY_SRC / "recipe_mil")


# what the rules ask about a dataset's sheet and raw inputs (recipe_mil.modalities: no branching on modalities here)
DATASETS = {name: DatasetInputs(name, ds, RESULTS) for name, ds in config["datasets"].items()}


def load_dataset_sheet(dataset):
    """Load and check one dataset's sheet before any job runs; errors name the rows."""
    sheet, source = DATASETS[dataset].load_sheet(n_folds=config["splits"]["n_folds"])
    validate_rows(sheet, SAMPLES_SCHEMA, source=source)  # errors name the sheet's file and line
    return sheet


SHEETS = {ds: load_dataset_sheet(ds) for ds in config["datasets"]}


def dataset_scenarios(dataset):
    """Scenario ids of the config that apply to a dataset (recipe_mil.scenarios: a missing class must be its class)
    and that the selected part of the study runs (all of them without ``part``)."""
    scenarios = configured_scenarios(config["scenarios"], config["datasets"][dataset]["classes"])
    return [s for s in scenarios if PART is None or PART.includes(dataset, s)]


def scenario_methods(scenario):
    """Methods run in a scenario (a family name such as ``missing_class`` works too)."""
    return methods_for(config["methods"], scenario)


def families():
    """Scenario families the config runs (one training and one generation rule each)."""
    return [f for f in SCENARIOS if any(scenario_family(s) == f for ds in SHEETS for s in dataset_scenarios(ds))]


SEEDS = list(range(config["mil"]["n_seeds"]))


def check_missing_class(dataset):
    """Fail before any job runs if a missing_class scenario has no external patient of that class."""
    sheet = SHEETS[dataset]
    for scenario in map(parse_scenario, dataset_scenarios(dataset)):
        if scenario.name == "missing_class":
            cls = scenario.missing
            if not ((sheet["cohort"] == "external") & (sheet["label"] == cls)).any():
                raise ValueError(
                    f"config: scenarios.missing_class.classes has {cls!r} but dataset {dataset!r} has no "
                    f"external-cohort patient of that class to learn its recipe from"
                )


def check_low_data(dataset):
    """Fail before any job runs if low_data asks for more patients than a fold trains on."""
    s = config["splits"]
    splits = make_splits(
        SHEETS[dataset], n_folds=s["n_folds"], n_repeats=s["n_repeats"], val_fraction=s["val_fraction"],
        seed=config["seed"],
    )
    train = splits[splits["role"] == "train"].groupby(["repeat", "fold", "label"]).size()
    rep, fold, label = train.idxmin()
    for n in config["scenarios"]["low_data"]["n_per_class"]:
        if n > train.min():
            raise ValueError(
                f"config: scenarios.low_data.n_per_class={n} but dataset {dataset!r} has only {train.min()} "
                f"training patients of class {label!r} in repeat {rep}, fold {fold}"
            )


def check_missing_class_names():
    """Fail before any job runs if a missing_class class is no dataset's class (a typo would drop the scenario)."""
    known = {c for ds in config["datasets"].values() for c in ds["classes"]}
    unknown = [c for c in config["scenarios"]["missing_class"]["classes"] if c not in known]
    if unknown:
        raise ValueError(
            f"config: scenarios.missing_class.classes has {unknown}, which is no dataset's class "
            f"(classes: {sorted(known)})"
        )


def check_alignment(dataset):
    """Fail before any job runs if align_external has no class both cohorts share in a missing_class scenario.

    The alignment's statistics must come from shared classes: an external cohort holding only the
    missing class would have the class difference removed along with the cohort shift.
    """
    mode = config["recipes"]["align_external"]
    if mode == "none":
        return
    sheet = SHEETS[dataset]
    external = set(sheet.loc[sheet["cohort"] == "external", "label"])
    for scenario in map(parse_scenario, dataset_scenarios(dataset)):
        if scenario.name != "missing_class":
            continue
        missing = scenario.missing
        shared = (external - {missing}) & (set(config["datasets"][dataset]["classes"]) - {missing})
        if not shared:
            raise ValueError(
                f"config: recipes.align_external={mode!r} but in dataset {dataset!r}, scenario {scenario.id}, the "
                f"external cohort ({sorted(external)}) shares no class with the target training patients: a cohort "
                "shift cannot be told from a class difference. Set recipes.align_external: none or add external "
                "patients of another class"
            )


def export_methods():
    """Methods whose synthetic patients ``export: true`` writes as bag files: the augmented methods of ``full``."""
    return [m for m in methods_for(config["methods"], "full") if METHODS[m].augmented]


def check_export():
    """Fail before any job runs if ``export: true`` has nothing to export (it exports the ``full`` scenario)."""
    if not config["export"]:
        return
    if not config["scenarios"]["full"]:
        raise ValueError(
            "config: export: true exports the synthetic patients of the full scenario; set scenarios.full: true"
        )
    if not export_methods():
        raise ValueError(f"config: export: true but no method of {config['methods']} makes synthetic patients")


check_missing_class_names()
check_export()
for _ds in SHEETS:
    check_low_data(_ds)
    check_missing_class(_ds)
    check_alignment(_ds)


def dataset_sheet_path(dataset):
    """The sample sheet file of a dataset (written by simulate for simulated data)."""
    return DATASETS[dataset].sheet_file


def sheet_path(wildcards):
    """The sample sheet file of the dataset in the wildcards."""
    return dataset_sheet_path(wildcards.dataset)


def bag_files(dataset, cohorts=("target", "external")):
    """Bag paths of a dataset's patients."""
    sheet = SHEETS[dataset]
    return [f"{RESULTS}/{dataset}/bags/{p}.h5" for p in sheet.loc[sheet["cohort"].isin(cohorts), "patient"]]


def dataset_bags(wildcards):
    """All bag files of the dataset in the wildcards."""
    return bag_files(wildcards.dataset)


def patient_path(wildcards):
    """The sheet's path of one patient: bag file, FCS file or image folder."""
    sheet = SHEETS[wildcards.dataset]
    return sheet.loc[sheet["patient"] == wildcards.patient, "path"].iloc[0]


def patient_dataset(wildcards):
    """The sheet's data set of one patient's FCS file (flow; 1-based), or None for the file's default."""
    sheet = SHEETS[wildcards.dataset]
    if "dataset" not in sheet:
        return None
    value = sheet.loc[sheet["patient"] == wildcards.patient, "dataset"].iloc[0]
    return int(value) if value else None


def flow_datasets(dataset):
    """The sheet's data set choices of a flow dataset, in sheet order (None where not given)."""
    sheet = SHEETS[dataset]
    if "dataset" not in sheet:
        return [None] * len(sheet)
    return [int(v) if v else None for v in sheet["dataset"]]


def raw_input(wildcards):
    """An FCS file or image folder: the simulator's raw folder when simulated (a directory output)."""
    return DATASETS[wildcards.dataset].patient_input(patient_path(wildcards))


def patient_label(wildcards):
    """The sheet's label of one patient."""
    sheet = SHEETS[wildcards.dataset]
    return sheet.loc[sheet["patient"] == wildcards.patient, "label"].iloc[0]


def flow_files(wildcards):
    """FCS files the panel decision depends on: none with a configured panel (so fixing one file
    re-embeds only that patient), else every file (or the simulator's raw folder)."""
    if config["datasets"][wildcards.dataset]["flow"]["panel"]:
        return []
    return DATASETS[wildcards.dataset].patient_inputs(list(SHEETS[wildcards.dataset]["path"]))


def run_dir(wildcards):
    """The folder of one dataset / scenario / repeat / fold."""
    return f"{RESULTS}/{wildcards.dataset}/{wildcards.scenario}/r{wildcards.repeat}f{wildcards.fold}"


def fold_synthetic_inputs(wildcards):
    """Pool and the synthetic patients of every generator the scenario's methods train with."""
    gens = generators_for(config["methods"], wildcards.scenario)
    if not gens:
        return {}
    run = run_dir(wildcards)
    return {"pool": f"{run}/pool.h5ad", **{f"synthetic__{g}": f"{run}/synthetic/{g}.h5" for g in gens}}


def selected_path(run, seed):
    """The scored and selected recipe candidates of one training seed."""
    return f"{run}/synthetic/recipe_selected/s{seed}.h5"


def realism_inputs(wildcards):
    """The synthetic patients of every augmentation method of one run (selections of seed 0)."""
    run = run_dir(wildcards)
    return {
        m: selected_path(run, 0) if METHODS[m].selected else f"{run}/synthetic/{METHODS[m].generator}.h5"
        for m in scenario_methods(wildcards.scenario)
        if METHODS[m].augmented
    }


def run_files(name):
    """A per-run output file of every dataset x scenario x repeat x fold."""
    s = config["splits"]
    return [
        f"{RESULTS}/{ds}/{sc}/r{r}f{f}/{name}"
        for ds in SHEETS
        for sc in dataset_scenarios(ds)
        for r in range(s["n_repeats"])
        for f in range(s["n_folds"])
    ]


def run_outputs(name):
    """A per-method output file of every dataset x scenario x repeat x fold x method x training seed."""
    s = config["splits"]
    return [
        f"{RESULTS}/{ds}/{sc}/r{r}f{f}/{m}/s{seed}/{name}"
        for ds in SHEETS
        for sc in dataset_scenarios(ds)
        for r in range(s["n_repeats"])
        for f in range(s["n_folds"])
        for m in scenario_methods(sc)
        for seed in SEEDS
    ]


def export_synthetic_input(wildcards):
    """The pool and the synthetic patients of one method in one fold of the full scenario (selection of seed 0)."""
    run = f"{RESULTS}/{wildcards.dataset}/full/r{wildcards.repeat}f{wildcards.fold}"
    spec = METHODS[wildcards.method]
    return {
        "pool": f"{run}/pool.h5ad",
        "synthetic": selected_path(run, 0) if spec.selected else f"{run}/synthetic/{spec.generator}.h5",
    }


def export_files():
    """The export sample sheets of every dataset, augmented method and fold of ``full`` (none unless ``export``)."""
    if not config["export"]:
        return []
    s = config["splits"]
    return [
        f"{RESULTS}/{ds}/export/{m}/r{r}f{f}/samples.tsv"
        for ds in SHEETS
        for m in export_methods()
        for r in range(s["n_repeats"])
        for f in range(s["n_folds"])
    ]


def fold_plots():
    """Figures of the first fold of the full and missing_class scenarios (when the recipe method runs)."""
    if "recipe" not in config["methods"]:
        return []
    return [
        f"{RESULTS}/{ds}/plots/{sc}/recipes.png"
        for ds in SHEETS
        for sc in dataset_scenarios(ds)
        if scenario_family(sc) != "low_data"
    ]


def embedded_by(rule):
    """The datasets whose modality's bags the rule (or per-dataset rule family) ``rule`` writes."""
    return [ds for ds, d in DATASETS.items() if d.modality.embed_rule == rule]


def simulated_by(rule):
    """The simulated datasets whose raw data the rule ``rule`` writes."""
    return [ds for ds, d in DATASETS.items() if d.simulate_rule == rule]


ALL_PATIENTS = sorted({p for sheet in SHEETS.values() for p in sheet["patient"]})


def alternation(values):
    """A regex matching exactly one of ``values`` (never a path with a slash)."""
    return "|".join(re.escape(str(v)) for v in sorted(values)) if values else "(?!)"


wildcard_constraints:
    dataset=alternation(SHEETS),
    patient=alternation(ALL_PATIENTS),
    scenario=scenario_pattern(),
    repeat=r"\d+",
    fold=r"\d+",
    seed=r"\d+",
