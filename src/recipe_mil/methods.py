"""The study's methods in one registry: what each trains on and where it runs.

Dependency-free on purpose: the workflow reads it when it plans jobs (which synthetic files a
fold needs, which methods a scenario runs), the schema check and the summary read the same
names, so a new method is one entry here plus its generator in :mod:`recipe_mil.augment`.
See ``docs/method.md`` for what each method means.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the scenario ids of each family (the first part of an id), as regular expressions
FAMILY_PATTERNS = {
    "full": r"full",
    "low_data": r"low_data-n\d+-d\d+",
    "missing_class": r"missing_class-[A-Za-z0-9_.+-]+",
}
SCENARIO_FAMILIES = tuple(FAMILY_PATTERNS)


@dataclass(frozen=True)
class MethodSpec:
    """One method of the study.

    Attributes
    ----------
    name
        The method's name (config ``methods``, ``summary.tsv``).
    generator
        The synthetic-patient file it trains with (``synthetic/{generator}.h5``), or None
        for methods that train on real patients only.
    scenarios
        Scenario families the method runs in (a method that changes nothing elsewhere, such
        as one that swaps the external cohort's instances in, runs only where it matters).
    real_roles
        Roles of the real patients it trains on (``external`` adds the external patients of
        a missing class as they are).
    selected
        Its synthetic patients are chosen from the generator's candidates by Monte-Carlo-
        dropout uncertainty (``recipe_selected``).
    """

    name: str
    generator: str | None = None
    scenarios: tuple[str, ...] = SCENARIO_FAMILIES
    real_roles: tuple[str, ...] = ("train",)
    selected: bool = False

    @property
    def augmented(self) -> bool:
        """Whether the method adds synthetic patients."""
        return self.generator is not None


REFERENCE = "real_only"
"""The method every other one is compared with."""

METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec(REFERENCE),
        MethodSpec("real_external", real_roles=("train", "external"), scenarios=("missing_class",)),
        MethodSpec("shuffle", generator="shuffle"),
        MethodSpec("remix", generator="remix"),
        MethodSpec("psemix", generator="psemix"),
        MethodSpec("recipe", generator="recipe"),
        MethodSpec("recipe_selected", generator="recipe_candidates", selected=True),
        MethodSpec("ablation_pooled_proportions", generator="ablation_pooled_proportions"),
        MethodSpec(
            "ablation_external_instances", generator="ablation_external_instances", scenarios=("missing_class",)
        ),
    )
}
"""Every method, in the order tables list them."""

AUGMENTED_METHODS = tuple(m for m, spec in METHODS.items() if spec.augmented)


def scenario_family(scenario_id: str) -> str:
    """Return the family of a scenario id: ``full``, ``low_data`` or ``missing_class``."""
    family = scenario_id.split("-", 1)[0]
    if family not in SCENARIO_FAMILIES:
        raise ValueError(f"unknown scenario {scenario_id!r}; families: {SCENARIO_FAMILIES}")
    return family


def methods_for(methods: list[str] | tuple[str, ...], scenario_id: str) -> list[str]:
    """Return the configured ``methods`` that run in a scenario, in registry order.

    Raises
    ------
    ValueError
        If a method is not in the registry.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {list(METHODS)}")
    family = scenario_family(scenario_id)
    return [m for m in METHODS if m in methods and family in METHODS[m].scenarios]


def generators_for(methods: list[str] | tuple[str, ...], scenario_id: str) -> list[str]:
    """Return the synthetic files the configured methods of a scenario train with."""
    return [g for m in methods_for(methods, scenario_id) if (g := METHODS[m].generator) is not None]
