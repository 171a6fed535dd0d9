"""The study's methods in one registry: what each trains on and where it runs.

Light on purpose: the workflow reads it when it plans jobs (which synthetic files a fold needs,
which methods a scenario runs), the config check and the summary read the same names. A new
method is one module defining a :class:`MethodSpec` named ``METHOD`` (with its generator in
``make`` when it adds synthetic patients) plus one ``register_method("recipe_mil.<module>")``
line at the end of this file; the built-in generators are in :mod:`recipe_mil.augment`.
See ``docs/method.md`` for what each method means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recipe_mil.registry import load_entry
from recipe_mil.scenarios import SCENARIOS, scenario_family


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
        as one that swaps the external cohort's instances in, runs only where it matters);
        None: every registered family.
    real_roles
        Roles of the real patients it trains on (``external`` adds the external patients of
        a missing class as they are).
    selected
        Its synthetic patients are chosen from the generator's candidates by Monte-Carlo-
        dropout uncertainty (``recipe_selected``).
    make
        The generator, ``make(inp: GeneratorInput, seed) -> SyntheticSet``, of a method whose
        generator is not built in to :data:`recipe_mil.augment.GENERATORS`.
    """

    name: str
    generator: str | None = None
    scenarios: tuple[str, ...] | None = None
    real_roles: tuple[str, ...] = ("train",)
    selected: bool = False
    make: Callable[[Any, int], Any] | None = None

    def runs_in(self, family: str) -> bool:
        """Whether the method runs in a scenario family."""
        return self.scenarios is None or family in self.scenarios

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


def register_method(method: MethodSpec | str) -> MethodSpec:
    """Add a method (or the ``METHOD`` of the module a dotted name names) to :data:`METHODS`, after the others."""
    method = load_entry(method, "METHOD", MethodSpec)
    unknown = [f for f in method.scenarios or () if f not in SCENARIOS]
    if unknown:
        raise ValueError(f"method {method.name!r}: unknown scenario families {unknown}")
    METHODS[method.name] = method
    return method


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
    return [m for m in METHODS if m in methods and METHODS[m].runs_in(family)]


def generators_for(methods: list[str] | tuple[str, ...], scenario_id: str) -> list[str]:
    """Return the synthetic files the configured methods of a scenario train with."""
    return [g for m in methods_for(methods, scenario_id) if (g := METHODS[m].generator) is not None]


# a new method: register_method("recipe_mil.<its module>") here

AUGMENTED_METHODS = tuple(m for m, spec in METHODS.items() if spec.augmented)
"""The methods that add synthetic patients (registered ones included)."""
