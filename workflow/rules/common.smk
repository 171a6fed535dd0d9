# Sheets, validation, input functions and wildcard constraints. Functions live here only.
import re
import sys
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from recipe_mil.io.h5ad import h5ad_patients  # noqa: E402
from recipe_mil.sheets import check_bag_files, check_sheet, load_sheet  # noqa: E402
from recipe_mil.simulate.dataset import TRUTH_COLUMNS as SIMULATED_TRUTH_COLUMNS  # noqa: E402
from recipe_mil.simulate.dataset import sim_params_from_config, simulated_sheet  # noqa: E402
from recipe_mil.augment import AUGMENTED_METHODS, GENERATORS  # noqa: E402
from recipe_mil.splits import SCENARIO_PATTERN, make_splits  # noqa: E402


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = "results"


def simulated_dataset_sheet(dataset):
    """The sheet of a simulated dataset, computed from the simulator's design (no data needed)."""
    ds = config["datasets"][dataset]
    target, external = sim_params_from_config(ds["simulate"], ds["classes"], ds["modality"])
    return simulated_sheet(target, external, modality=ds["modality"], raw_dir=f"{RESULTS}/{dataset}/raw/files")


def raw_path(dataset, which):
    """The target/external .h5ad of an scrna dataset (simulated or given)."""
    ds = config["datasets"][dataset]
    if "simulate" in ds:
        return f"{RESULTS}/{dataset}/raw/{which}.h5ad"
    return ds["h5ad"] if which == "target" else ds.get("external_h5ad", "")


def load_dataset_sheet(dataset):
    """Load and check one dataset's sheet before any job runs; errors name the rows."""
    ds = config["datasets"][dataset]
    n_folds = config["splits"]["n_folds"]
    if "simulate" in ds:
        sheet, source = simulated_dataset_sheet(dataset), f"(simulated dataset {dataset})"
        known = None
    else:
        if "samples" not in ds:
            raise ValueError(f"config: dataset {dataset!r} needs 'samples' (a TSV sheet) or 'simulate'")
        source = ds["samples"]
        sheet = load_sheet(source, modality=ds["modality"])
        known = None
        if ds["modality"] == "scrna":
            if "h5ad" not in ds:
                raise ValueError(f"config: scrna dataset {dataset!r} needs 'h5ad'")
            known = {}
            for cohort, key in (("target", "h5ad"), ("external", "external_h5ad")):
                if (sheet["cohort"] == cohort).any():
                    if key not in ds:
                        raise ValueError(f"config: dataset {dataset!r} has {cohort} patients but no '{key}'")
                    if not Path(ds[key]).is_file():
                        raise ValueError(f"config: datasets.{dataset}.{key}: file {ds[key]} does not exist")
                    known[cohort] = h5ad_patients(ds[key], ds["scrna"]["patient_key"])
    check_sheet(
        sheet,
        source=source,
        classes=ds["classes"],
        n_folds=n_folds,
        file_paths=ds["modality"] != "scrna" and "simulate" not in ds,
        known_patients=known,
    )
    if ds["modality"] == "bags" and "simulate" not in ds:
        check_bag_files(sheet, source=source)  # shapes only: unreadable files, mixed embedding widths
    validate(sheet, schema="../schemas/samples.schema.yaml")
    return sheet


SHEETS = {ds: load_dataset_sheet(ds) for ds in config["datasets"]}


def scenario_ids():
    """Scenario ids of the config: full, low_data-n{n}-d{draw} and missing_class-{class}."""
    ids = ["full"] if config["scenarios"]["full"] else []
    low = config["scenarios"]["low_data"]
    ids += [f"low_data-n{n}-d{d}" for n in low["n_per_class"] for d in range(low["draws"])]
    ids += [f"missing_class-{c}" for c in config["scenarios"]["missing_class"]["classes"]]
    return ids


def dataset_scenarios(dataset):
    """Scenario ids that apply to a dataset (a missing class must be one of its classes)."""
    classes = config["datasets"][dataset]["classes"]
    return [s for s in scenario_ids() if not s.startswith("missing_class-") or s.split("-", 1)[1] in classes]


def scenario_methods(scenario):
    """Methods run in a scenario: real_external only where a class is missing."""
    return [m for m in config["methods"] if m != "real_external" or scenario.startswith("missing_class-")]


def check_missing_class(dataset):
    """Fail before any job runs if a missing_class scenario has no external patient of that class."""
    sheet = SHEETS[dataset]
    for scenario in dataset_scenarios(dataset):
        if scenario.startswith("missing_class-"):
            cls = scenario.split("-", 1)[1]
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


check_missing_class_names()
for _ds in SHEETS:
    check_low_data(_ds)
    check_missing_class(_ds)


def dataset_sheet_path(dataset):
    """The sample sheet file of a dataset (written by simulate for simulated data)."""
    ds = config["datasets"][dataset]
    return f"{RESULTS}/{dataset}/raw/samples.tsv" if "simulate" in ds else ds["samples"]


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


def raw_input(wildcards):
    """An FCS file or image folder: the simulator's raw folder when simulated (a directory output)."""
    if "simulate" in config["datasets"][wildcards.dataset]:
        return f"{RESULTS}/{wildcards.dataset}/raw/files"
    return patient_path(wildcards)


def patient_label(wildcards):
    """The sheet's label of one patient."""
    sheet = SHEETS[wildcards.dataset]
    return sheet.loc[sheet["patient"] == wildcards.patient, "label"].iloc[0]


def flow_files(wildcards):
    """FCS files the panel decision depends on: none with a configured panel (so fixing one file
    re-embeds only that patient), else every file (or the simulator's raw folder)."""
    if config["datasets"][wildcards.dataset]["flow"]["panel"]:
        return []
    if "simulate" in config["datasets"][wildcards.dataset]:
        return [f"{RESULTS}/{wildcards.dataset}/raw/files"]
    return list(SHEETS[wildcards.dataset]["path"])


def run_dir(wildcards):
    """The folder of one dataset / scenario / repeat / fold."""
    return f"{RESULTS}/{wildcards.dataset}/{wildcards.scenario}/r{wildcards.repeat}f{wildcards.fold}"


def fold_methods():
    """Methods trained by the per-fold training job (real_external has its own job)."""
    return [m for m in config["methods"] if m != "real_external"]


def fold_synthetic_inputs(wildcards):
    """Pool and every generator's synthetic patients for the per-fold training job."""
    gens = generators()
    if not gens:
        return {}
    run = run_dir(wildcards)
    return {"pool": f"{run}/pool.h5ad", **{f"synthetic__{g}": f"{run}/synthetic/{g}.h5" for g in gens}}


def generators():
    """Synthetic-bag generators the configured methods need (one generate job writes them all)."""
    gens = [m for m in config["methods"] if m in GENERATORS]
    if "recipe_selected" in config["methods"]:
        gens.append("recipe_candidates")
    return gens


def realism_inputs(wildcards):
    """The synthetic patients of every augmentation method of one run."""
    run = run_dir(wildcards)
    return {m: f"{run}/synthetic/{m}.h5" for m in config["methods"] if m in AUGMENTED_METHODS}


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
    """A per-method output file of every dataset x scenario x repeat x fold x method."""
    s = config["splits"]
    return [
        f"{RESULTS}/{ds}/{sc}/r{r}f{f}/{m}/{name}"
        for ds in SHEETS
        for sc in dataset_scenarios(ds)
        for r in range(s["n_repeats"])
        for f in range(s["n_folds"])
        for m in scenario_methods(sc)
    ]


def fold_plots():
    """Figures of the first fold of the full and missing_class scenarios (when the recipe method runs)."""
    if "recipe" not in config["methods"]:
        return []
    return [
        f"{RESULTS}/{ds}/plots/{sc}/recipes.png"
        for ds in SHEETS
        for sc in dataset_scenarios(ds)
        if not sc.startswith("low_data")
    ]


SCRNA_DATASETS = [ds for ds, d in config["datasets"].items() if d["modality"] == "scrna"]
SIMULATED_DATASETS = [ds for ds, d in config["datasets"].items() if "simulate" in d]
BAGS_DATASETS = [ds for ds, d in config["datasets"].items() if d["modality"] == "bags"]
FLOW_DATASETS = [ds for ds, d in config["datasets"].items() if d["modality"] == "flow"]
IMAGE_DATASETS = [ds for ds, d in config["datasets"].items() if d["modality"] == "image"]
SIMULATED_FILE_DATASETS = [ds for ds in SIMULATED_DATASETS if ds in FLOW_DATASETS + IMAGE_DATASETS]
ALL_PATIENTS = sorted({p for sheet in SHEETS.values() for p in sheet["patient"]})


def alternation(values):
    """A regex matching exactly one of ``values`` (never a path with a slash)."""
    return "|".join(re.escape(str(v)) for v in sorted(values)) if values else "(?!)"


wildcard_constraints:
    dataset=alternation(SHEETS),
    patient=alternation(ALL_PATIENTS),
    scenario=SCENARIO_PATTERN,
    repeat=r"\d+",
    fold=r"\d+",
