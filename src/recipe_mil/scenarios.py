"""The study's scenarios in one registry: the id grammar, the config that asks for them, their patient sets.

A scenario family (``full``, ``low_data``, ``missing_class``) says, once, how its ids are written
(``low_data-n{n_per_class}-d{draw}``) and read back, which ids a config asks for, to which
datasets they apply and which patients of a fold train in them. The workflow plans its jobs and
wildcard constraints from it, :func:`recipe_mil.splits.scenario_patients` builds the patient
sets with it, the config check knows its config keys from it and the summary orders its rows
by it. A new scenario is one module defining a :class:`ScenarioFamily` named ``FAMILY`` plus one
``register_scenario("recipe_mil.<module>")`` line at the end of this file.

Light on purpose (numpy only): the workflow imports it when it plans jobs. See ``docs/method.md``
§2 for what each scenario means.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from recipe_mil.registry import load_entry
from recipe_mil.seeds import derive_seed

if TYPE_CHECKING:
    import pandas as pd

#: regular expression of a field of each type in a scenario id (a class name: :data:`recipe_mil.names.SAFE_NAME`)
FIELD_PATTERNS: dict[type, str] = {int: r"\d+", str: r"[A-Za-z0-9_.+-]+"}


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario identifier.

    Attributes
    ----------
    name
        The family: ``full``, ``low_data``, ``missing_class`` or a registered one.
    n_per_class
        Real training patients per class (``low_data`` only).
    draw
        Index of the random draw of those patients (``low_data`` only).
    missing
        The class removed from the target training set (``missing_class`` only).
    """

    name: str
    n_per_class: int | None = None
    draw: int | None = None
    missing: str | None = None

    @property
    def id(self) -> str:
        """Identifier used in paths: ``full``, ``low_data-n{n}-d{draw}`` or ``missing_class-{class}``."""
        return SCENARIOS[self.name].format(self)


#: builds a fold's patient set: (patients with roles, scenario, repeat, fold, base seed) -> patients with roles
PatientSetBuilder = Callable[["pd.DataFrame", Scenario, int, int, int], "pd.DataFrame"]


@dataclass(frozen=True)
class ScenarioFamily:
    """One kind of scenario: its id grammar, the config that asks for it and its patient sets.

    Attributes
    ----------
    name
        The family's name: the first part of its ids, its key under the config's ``scenarios``
        and the ``scenario`` column of ``summary.tsv``.
    template
        Its ids, with ``{field}`` for each field (``low_data-n{n_per_class}-d{draw}``).
    fields
        Field -> type (``int`` or ``str``), each an attribute of :class:`Scenario`.
    configured
        Config section (``scenarios.<name>``, None when absent) -> the field values of every
        scenario of the family it asks for.
    patients
        Sets the roles of one fold's patients (``train``, ``val``, ``test``, ``external``,
        ``unused``); None keeps the fold's split as it is.
    uses_external
        Whether external patients may keep their role (else they are ``unused`` before
        ``patients`` runs).
    applies
        (scenario, the dataset's classes) -> whether the scenario runs on that dataset; None: always.
    """

    name: str
    template: str
    fields: Mapping[str, type] = field(default_factory=dict)
    configured: Callable[[Any], list[dict[str, Any]]] = lambda section: [{}] if section else []
    patients: PatientSetBuilder | None = None
    uses_external: bool = False
    applies: Callable[[Scenario, Sequence[str]], bool] | None = None

    def _regex(self, capture: bool) -> str:
        parts = re.split(r"\{(\w+)\}", self.template)  # text, field, text, field, ..., text
        fields = [FIELD_PATTERNS[self.fields[p]] for p in parts[1::2]]
        return "".join(
            (f"({fields[i // 2]})" if capture else fields[i // 2]) if i % 2 else re.escape(p)
            for i, p in enumerate(parts)
        )

    @property
    def pattern(self) -> str:
        """Regular expression of the family's ids (a wildcard constraint)."""
        return self._regex(capture=False)

    def format(self, scenario: Scenario) -> str:
        """Return the id of ``scenario``."""
        return self.template.format(**{f: getattr(scenario, f) for f in self.fields})

    def parse(self, scenario_id: str) -> Scenario | None:
        """Return the scenario an id names, or None when it is no id of this family."""
        m = re.fullmatch(self._regex(capture=True), scenario_id)
        if m is None:
            return None
        names = re.findall(r"\{(\w+)\}", self.template)
        return Scenario(self.name, **{f: self.fields[f](v) for f, v in zip(names, m.groups(), strict=True)})


SCENARIOS: dict[str, ScenarioFamily] = {}
"""Every scenario family, in the order tables list them."""


def register_scenario(family: ScenarioFamily | str) -> ScenarioFamily:
    """Add a family (or the ``FAMILY`` of the module a dotted name names) to :data:`SCENARIOS`, after the others."""
    family = load_entry(family, "FAMILY", ScenarioFamily)
    unknown = set(re.findall(r"\{(\w+)\}", family.template)) ^ set(family.fields)
    if unknown or not set(family.fields) <= set(Scenario.__dataclass_fields__) - {"name"}:
        raise ValueError(f"scenario family {family.name!r}: its template's fields must be its Scenario fields")
    if not family.template.startswith(family.name) or "/" in family.template:
        raise ValueError(f"scenario family {family.name!r}: its ids must start with its name")
    SCENARIOS[family.name] = family
    return family


def parse_scenario(scenario_id: str) -> Scenario:
    """Parse a scenario identifier such as ``full`` or ``low_data-n4-d1``.

    Raises
    ------
    ValueError
        If no registered family writes such an id.
    """
    for family in SCENARIOS.values():
        scenario = family.parse(scenario_id)
        if scenario is not None:
            return scenario
    expected = ", ".join(repr(f.template.replace("{", "<").replace("}", ">")) for f in SCENARIOS.values())
    raise ValueError(f"unknown scenario id {scenario_id!r} (expected one of {expected})")


def scenario_family(scenario_id: str) -> str:
    """Return the family of a scenario id (a family's name is accepted too)."""
    return scenario_id if scenario_id in SCENARIOS else parse_scenario(scenario_id).name


def scenario_pattern(family: str | None = None) -> str:
    """Regular expression of the ids of one family, or of every family (wildcard constraints)."""
    families = [SCENARIOS[family]] if family is not None else SCENARIOS.values()
    return "|".join(f.pattern for f in families)


def configured_scenarios(section: Mapping[str, Any], classes: Sequence[str] | None = None) -> list[str]:
    """Return the scenario ids a config's ``scenarios`` section asks for, in registry order.

    Parameters
    ----------
    section
        The config's ``scenarios``.
    classes
        A dataset's classes: only the scenarios that apply to it (None: every one).
    """
    out = []
    for family in SCENARIOS.values():
        for values in family.configured(section.get(family.name)):
            scenario = Scenario(family.name, **values)
            if classes is None or family.applies is None or family.applies(scenario, classes):
                out.append(family.format(scenario))
    return out


# ---------------------------------------------------------------------------------------- the built-in families


def _low_data_patients(out: pd.DataFrame, sc: Scenario, repeat: int, fold: int, seed: int) -> pd.DataFrame:
    """Keep ``n_per_class`` randomly drawn training patients per class (draw ``sc.draw``, seeded)."""
    rng = np.random.default_rng(derive_seed(seed, "low_data", repeat, fold, sc.n_per_class, sc.draw))
    train = out[out["role"] == "train"]
    for label, group in train.groupby("label", sort=True):
        if len(group) < sc.n_per_class:
            raise ValueError(
                f"scenario {sc.id}: class {label!r} has only {len(group)} training patients "
                f"in repeat {repeat}, fold {fold}"
            )
        keep = rng.choice(group.index.to_numpy(), size=sc.n_per_class, replace=False)
        out.loc[group.index.difference(keep), "role"] = "unused"
    return out


def _missing_class_patients(out: pd.DataFrame, sc: Scenario, repeat: int, fold: int, seed: int) -> pd.DataFrame:
    """Remove the class from the target training and validation patients; keep its external patients only."""
    is_c = out["label"] == sc.missing
    out.loc[is_c & out["role"].isin(["train", "val"]), "role"] = "unused"
    out.loc[~is_c & (out["role"] == "external"), "role"] = "unused"
    if not (is_c & (out["role"] == "external")).any():
        raise ValueError(f"scenario {sc.id}: the external cohort has no patient of class {sc.missing!r}")
    return out


FULL = ScenarioFamily("full", "full")
"""Every training patient of the fold."""

LOW_DATA = ScenarioFamily(
    "low_data",
    "low_data-n{n_per_class}-d{draw}",
    {"n_per_class": int, "draw": int},
    configured=lambda s: [
        {"n_per_class": n, "draw": d}
        for n in (s or {}).get("n_per_class", [])
        for d in range((s or {}).get("draws", 1))
    ],
    patients=_low_data_patients,
)
"""``n_per_class`` drawn training patients per class (config ``scenarios.low_data``)."""

MISSING_CLASS = ScenarioFamily(
    "missing_class",
    "missing_class-{missing}",
    {"missing": str},
    configured=lambda s: [{"missing": c} for c in (s or {}).get("classes", [])],
    patients=_missing_class_patients,
    uses_external=True,
    applies=lambda sc, classes: sc.missing in classes,
)
"""A class learned from the external cohort only (config ``scenarios.missing_class``)."""

for _family in (FULL, LOW_DATA, MISSING_CLASS):
    register_scenario(_family)
# a new family: register_scenario("recipe_mil.<its module>") here
