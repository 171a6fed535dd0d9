"""The study's data modalities in one registry: how a dataset of each kind is read, embedded and simulated.

A modality (``scrna``, ``flow``, ``image``, ``bags``) says, once, what its sample sheet's ``path``
names (a file or folder per patient, or a patient of a per-cohort ``.h5ad``), which optional sheet
columns it takes, which rule embeds its patients into bags, how its sheet's files are checked
before any job runs and which simulator (if any) writes a simulated cohort of it. The workflow's
rules ask :class:`DatasetInputs` (built from a dataset's config) where a dataset's sheet and raw
inputs are instead of branching on modality names or on ``simulate``; :mod:`recipe_mil.sheets`,
:mod:`recipe_mil.simulate.dataset` and :mod:`recipe_mil.config_check` read the same registry.

A new modality is one module defining a :class:`Modality` named ``MODALITY`` plus one
``register_modality("recipe_mil.<module>")`` line at the end of this file (and, when no existing
rule embeds it, its embedding rule in ``workflow/rules/embed.smk``, which picks its datasets with
``embed_rule``).

Light on purpose (standard library only at import): the workflow imports it when it parses the
rules; the simulators, readers and checks it names are imported only when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recipe_mil.registry import load_entry

if TYPE_CHECKING:
    import pandas as pd

TRUTH_COLUMNS: tuple[str, ...] = ("cell_type", "state")
"""Per-instance truth every simulator writes and the embed steps carry into the bags."""


def load_function(name: str) -> Callable[..., Any]:
    """Return the function a ``"package.module:function"`` name names (its module imported now)."""
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Simulator:
    """How a modality's cohorts are simulated (:mod:`recipe_mil.simulate.dataset` runs it).

    Attributes
    ----------
    module
        Dotted name of the simulator's module (imported when a dataset is simulated).
    params
        Its parameter dataclass: the keys of a dataset's ``simulate`` block (``classes`` come
        from the dataset).
    external
        Its external-cohort function, ``external(target_params, **block["external"])``.
    rule
        The workflow rule that writes the dataset's raw data and sample sheet.
    cohort
        The function writing one cohort's per-patient files, ``cohort(params, folder) -> sheet``
        (None for a modality whose cohorts are ``.h5ad`` files).
    suffix
        What a patient's file name adds to the patient id (``.fcs``; empty for a folder).
    """

    module: str
    params: str
    external: str
    rule: str
    cohort: str | None = None
    suffix: str = ""


@dataclass(frozen=True)
class Modality:
    """One kind of data: its sheet, its embedding rule, its checks and its simulator.

    Attributes
    ----------
    name
        The config's ``datasets.<name>.modality``.
    embed_rule
        The workflow rule that writes its bags (``results/{dataset}/bags/{patient}.h5``);
        several modalities may share one.
    cohort_files
        Cohort -> the dataset's config key of that cohort's ``.h5ad`` file, for a modality
        whose patients are rows of per-cohort files (the sheet's ``path`` is then the patient's
        id in the file); empty: ``path`` names one file or folder per patient.
    patient_key
        Config section and key of the ``obs`` column holding patient ids in ``cohort_files``.
    sheet_columns
        Optional sample-sheet columns of this modality -> what they hold (other modalities
        refuse them).
    check_files
        ``"module:function"`` checking a given sheet's files before any job runs,
        ``function(sheet, source=...)`` (``bags``: their shapes); None: existence only.
    simulator
        How a simulated dataset of this modality is written; None: it cannot be simulated.
    image_instances
        Its instances are image crops (the sheet's ``path`` is the patient's folder of them):
        attention figures show the most-attended crops as thumbnails.
    """

    name: str
    embed_rule: str
    cohort_files: Mapping[str, str] = field(default_factory=dict)
    patient_key: tuple[str, str] | None = None
    sheet_columns: Mapping[str, str] = field(default_factory=dict)
    check_files: str | None = None
    simulator: Simulator | None = None
    image_instances: bool = False

    @property
    def path_names_file(self) -> bool:
        """Whether a sheet's ``path`` names a file or folder of its own per patient."""
        return not self.cohort_files


MODALITIES: dict[str, Modality] = {}
"""Every modality, in registration order."""


def register_modality(modality: Modality | str) -> Modality:
    """Add a modality (or the ``MODALITY`` of the module a dotted name names) to :data:`MODALITIES`."""
    modality = load_entry(modality, "MODALITY", Modality)
    if modality.cohort_files and modality.patient_key is None:
        raise ValueError(f"modality {modality.name!r}: patients in cohort files need a patient_key")
    MODALITIES[modality.name] = modality
    return modality


def get_modality(name: str) -> Modality:
    """Return a registered modality.

    Raises
    ------
    ValueError
        If no modality of that name is registered.
    """
    if name not in MODALITIES:
        raise ValueError(f"unknown modality {name!r}; known: {list(MODALITIES)}")
    return MODALITIES[name]


def simulated_modalities() -> list[str]:
    """Return the modalities that have a simulator, in registration order."""
    return [m for m, spec in MODALITIES.items() if spec.simulator is not None]


def sheet_column_owners() -> dict[str, list[str]]:
    """Return optional sheet column -> the modalities that take it."""
    owners: dict[str, list[str]] = {}
    for spec in MODALITIES.values():
        for column in spec.sheet_columns:
            owners.setdefault(column, []).append(spec.name)
    return owners


@dataclass(frozen=True)
class DatasetInputs:
    """Where one configured dataset's sheet and raw inputs are: what the workflow's rules ask.

    Attributes
    ----------
    name
        The dataset's key under the config's ``datasets``.
    config
        Its config block (``modality``, ``classes``, ``samples``/``simulate``, ...).
    results
        The workflow's results folder.
    """

    name: str
    config: Mapping[str, Any]
    results: str = "results"

    @property
    def modality(self) -> Modality:
        """The dataset's registered modality."""
        return get_modality(self.config["modality"])

    @property
    def simulated(self) -> bool:
        """Whether the workflow simulates the dataset (a ``simulate`` block) instead of reading given files."""
        return "simulate" in self.config

    @property
    def raw_dir(self) -> str:
        """The folder a simulator writes the dataset's raw data to."""
        return f"{self.results}/{self.name}/raw"

    @property
    def simulate_rule(self) -> str | None:
        """The rule that writes the dataset's raw data (None for given data)."""
        sim = self.modality.simulator
        return sim.rule if self.simulated and sim is not None else None

    @property
    def sheet_file(self) -> str:
        """The dataset's sample sheet file (written by its simulator for simulated data)."""
        return f"{self.raw_dir}/samples.tsv" if self.simulated else self.config["samples"]

    def cohort_file(self, cohort: str) -> str:
        """Return a cohort's ``.h5ad`` (modalities with cohort files; ``""`` when a given dataset has none)."""
        if self.simulated:
            return f"{self.raw_dir}/{cohort}.h5ad"
        return self.config.get(self.modality.cohort_files[cohort], "")

    def patient_inputs(self, paths: Sequence[str]) -> list[str]:
        """Return the raw inputs of patients with these sheet paths: the simulator's folder when simulated."""
        return [f"{self.raw_dir}/files"] if self.simulated else list(paths)

    def patient_input(self, path: str) -> str:
        """Return the raw input of one patient with this sheet path: the simulator's folder when simulated."""
        return self.patient_inputs([path])[0]

    @property
    def truth_columns(self) -> tuple[str, ...]:
        """Per-instance truth the embedding carries into the bags (simulated data only)."""
        return TRUTH_COLUMNS if self.simulated else ()

    def load_sheet(self, n_folds: int) -> tuple[pd.DataFrame, str]:
        """Load and check the dataset's sheet before any job runs; errors name the rows.

        A simulated dataset's sheet is computed from the simulator's design (nothing simulated).
        A given one is read from ``samples``; its patients are looked up in the cohort files
        (modalities with cohort files) or its files checked (the modality's ``check_files``).

        Parameters
        ----------
        n_folds
            Folds of the split (every class needs that many target patients).

        Returns
        -------
        tuple[pandas.DataFrame, str]
            The sheet and its source as named in messages (the file, or the simulated dataset).

        Raises
        ------
        ValueError
            If the config lacks the sheet or a cohort file the sheet needs.
        recipe_mil.sheets.SampleSheetError
            Naming the rows of a malformed sheet.
        """
        from recipe_mil.sheets import check_sheet, load_sheet

        spec, ds = self.modality, self.config
        known = None
        if self.simulated:
            from recipe_mil.simulate.dataset import sim_params_from_config, simulated_sheet

            target, external = sim_params_from_config(ds["simulate"], ds["classes"], spec.name)
            sheet = simulated_sheet(target, external, modality=spec.name, raw_dir=f"{self.raw_dir}/files")
            source = f"(simulated dataset {self.name})"
        else:
            if "samples" not in ds:
                raise ValueError(f"config: dataset {self.name!r} needs 'samples' (a TSV sheet) or 'simulate'")
            source = ds["samples"]
            sheet = load_sheet(source, modality=spec.name)
            if spec.cohort_files:
                known = self._known_patients(sheet)
        check_sheet(
            sheet,
            source=source,
            classes=ds["classes"],
            n_folds=n_folds,
            file_paths=spec.path_names_file and not self.simulated,
            known_patients=known,
            dataset=self.name,
        )
        if spec.check_files is not None and not self.simulated:
            load_function(spec.check_files)(sheet, source=source)
        return sheet, source

    def _known_patients(self, sheet: pd.DataFrame) -> dict[str, list[str]]:
        """Cohort -> the patient ids of its ``.h5ad`` (each cohort the sheet has)."""
        from pathlib import Path

        from recipe_mil.io.h5ad import h5ad_patients

        spec, ds = self.modality, self.config
        first = next(iter(spec.cohort_files.values()))
        if first not in ds:
            raise ValueError(f"config: {spec.name} dataset {self.name!r} needs {first!r}")
        assert spec.patient_key is not None  # register_modality checks it
        section, key = spec.patient_key
        known = {}
        for cohort, config_key in spec.cohort_files.items():
            if (sheet["cohort"] == cohort).any():
                if config_key not in ds:
                    raise ValueError(f"config: dataset {self.name!r} has {cohort} patients but no '{config_key}'")
                if not Path(ds[config_key]).is_file():
                    raise ValueError(f"config: datasets.{self.name}.{config_key}: file {ds[config_key]} does not exist")
                known[cohort] = h5ad_patients(ds[config_key], ds[section][key])
        return known


# ------------------------------------------------------------------------------------------ the built-in modalities

SCRNA = Modality(
    "scrna",
    embed_rule="embed_scrna",
    cohort_files={"target": "h5ad", "external": "external_h5ad"},
    patient_key=("scrna", "patient_key"),
    simulator=Simulator("recipe_mil.simulate.scrna", "ScrnaSimParams", "external_params", rule="simulate_scrna"),
)
"""Single-cell RNA-seq: patients are cells of a target and an external ``.h5ad``, embedded per dataset."""

FLOW = Modality(
    "flow",
    embed_rule="embed_flow",
    sheet_columns={"dataset": "a data set of an FCS file"},
    simulator=Simulator(
        "recipe_mil.simulate.flow",
        "FlowSimParams",
        "external_flow_params",
        rule="simulate_files",
        cohort="simulate_flow_cohort",
        suffix=".fcs",
    ),
)
"""Flow cytometry: one FCS file (or one data set of it) per patient."""

IMAGE = Modality(
    "image",
    embed_rule="embed_image",
    image_instances=True,
    simulator=Simulator(
        "recipe_mil.simulate.image",
        "ImageSimParams",
        "external_image_params",
        rule="simulate_files",
        cohort="simulate_image_cohort",
    ),
)
"""Images: one folder of cell crops per patient."""

BAGS = Modality("bags", embed_rule="import_bag", check_files="recipe_mil.sheets:check_bag_files")
"""Embeddings computed elsewhere: one bag file per patient, imported as it is."""

for _modality in (SCRNA, FLOW, IMAGE, BAGS):
    register_modality(_modality)
# a new modality: register_modality("recipe_mil.<its module>") here
