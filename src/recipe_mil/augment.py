"""One entry point for every generator of synthetic patients (docs/method.md §5).

A generator writes one ``synthetic/{generator}.h5`` per fold; :mod:`recipe_mil.methods` says
which method trains with which generator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import anndata as ad

from recipe_mil.baselines import psemix_bags, remix_bags, shuffle_bags
from recipe_mil.config import StudyConfig
from recipe_mil.methods import METHODS
from recipe_mil.recipes.generate import SyntheticSet, generate_synthetic
from recipe_mil.recipes.recipes import ClassRecipe


def instance_sources(recipes: Mapping[str, ClassRecipe], *, default: str, missing_class: str) -> dict[str, str]:
    """Per-class ``instance_source``: ``missing_class`` for recipes learned on the external cohort only."""
    return {c: (missing_class if r.cohort == "external" else default) for c, r in recipes.items()}


@dataclass
class GeneratorInput:
    """What a generator may use: the fold's pool, its recipes and the config.

    Attributes
    ----------
    pool
        The fold's pool (``obs``: ``patient``, ``label``, ``cohort``, ``cluster``).
    recipes
        The fold's class recipes.
    pooled_recipe
        One recipe learned from all target training patients together (no class), for
        ``ablation_pooled_proportions``; None where the recipe step wrote none.
    classes
        All class names (soft-target columns).
    config
        The typed config; a workflow config mapping (keys ``generate``, ``select``,
        ``remix``, ``psemix``; missing ones take their defaults) is converted on construction.
    """

    pool: ad.AnnData
    recipes: Mapping[str, ClassRecipe]
    pooled_recipe: ClassRecipe | None
    classes: Sequence[str]
    config: StudyConfig

    def __post_init__(self) -> None:
        if not isinstance(self.config, StudyConfig):
            self.config = StudyConfig.from_config(self.config)

    @property
    def n_per_class(self) -> int:
        """Synthetic patients per class."""
        return self.config.generate.n_per_class

    @property
    def present(self) -> list[str]:
        """Classes with pooled patients, in class order."""
        labels = set(self.pool.obs["label"].astype(str))
        return [c for c in self.classes if c in labels]

    def from_recipes(
        self, recipes: Mapping[str, ClassRecipe], *, n: int, seed: int, missing_class_source: str | None = None
    ) -> SyntheticSet:
        """Generate along ``recipes`` with the configured instance sources (see :func:`generate_synthetic`)."""
        g = self.config.generate
        obs = self.pool.obs
        return generate_synthetic(
            recipes,
            obs["cluster"].to_numpy(),
            obs["label"].astype(str).to_numpy(),
            obs["cohort"].astype(str).to_numpy(),
            n_per_class=n,
            instance_source=instance_sources(
                self.recipes,
                default=g.instance_source,
                missing_class=missing_class_source or g.missing_class_source,
            ),
            seed=seed,
        )


def _recipe(inp: GeneratorInput, seed: int) -> SyntheticSet:
    return inp.from_recipes(inp.recipes, n=inp.n_per_class, seed=seed)


def _recipe_candidates(inp: GeneratorInput, seed: int) -> SyntheticSet:
    return inp.from_recipes(inp.recipes, n=inp.n_per_class * inp.config.select.oversample, seed=seed)


def _ablation_external_instances(inp: GeneratorInput, seed: int) -> SyntheticSet:
    # the same recipes; a class learned on the external cohort is filled with external instances
    return inp.from_recipes(inp.recipes, n=inp.n_per_class, seed=seed, missing_class_source="external")


def _ablation_pooled_proportions(inp: GeneratorInput, seed: int) -> SyntheticSet:
    # the same instance sources; every class's proportions and sizes from all target patients together
    if inp.pooled_recipe is None:
        raise ValueError("ablation_pooled_proportions needs the pooled recipe in recipes.json (rerun the recipes step)")
    pooled = {c: replace(inp.pooled_recipe, cohort=r.cohort) for c, r in inp.recipes.items()}
    return inp.from_recipes(pooled, n=inp.n_per_class, seed=seed)


def _shuffle(inp: GeneratorInput, seed: int) -> SyntheticSet:
    return shuffle_bags(inp.pool.obs, inp.present, n_per_class=inp.n_per_class, seed=seed)


def _remix(inp: GeneratorInput, seed: int) -> SyntheticSet:
    r = inp.config.remix
    return remix_bags(
        inp.pool.X,
        inp.pool.obs,
        inp.present,
        n_per_class=inp.n_per_class,
        n_prototypes=r.n_prototypes,
        modes=r.modes,
        p=r.p,
        seed=seed,
    )


def _psemix(inp: GeneratorInput, seed: int) -> SyntheticSet:
    p = inp.config.psemix
    return psemix_bags(
        inp.pool.X,
        inp.pool.obs,
        list(inp.classes),
        n_per_class=inp.n_per_class,
        n_pseudo=p.n_pseudo,
        n_prototypes=p.n_prototypes,
        alpha=p.alpha,
        seed=seed,
    )


GENERATORS: dict[str, Callable[[GeneratorInput, int], SyntheticSet]] = {
    "shuffle": _shuffle,
    "remix": _remix,
    "psemix": _psemix,
    "recipe": _recipe,
    "recipe_candidates": _recipe_candidates,
    "ablation_pooled_proportions": _ablation_pooled_proportions,
    "ablation_external_instances": _ablation_external_instances,
}
"""Generator name -> function; ``recipe_candidates`` makes ``select.oversample`` times more for selection."""


def make_synthetic(generator: str, inp: GeneratorInput, *, seed: int) -> SyntheticSet:
    """Make one generator's synthetic patients from a fold's pool.

    Parameters
    ----------
    generator
        One of :data:`GENERATORS`, or the generator of a registered method with its own
        ``make`` (:class:`recipe_mil.methods.MethodSpec`).
    inp
        The fold's pool, recipes and config.
    seed
        Random seed.

    Returns
    -------
    SyntheticSet
        ``generate.n_per_class`` bags per class (``select.oversample`` times more for
        ``recipe_candidates``).
    """
    registered = {spec.generator: spec.make for spec in METHODS.values() if spec.make is not None}
    make = GENERATORS.get(generator) or registered.get(generator)
    if make is None:
        raise ValueError(f"unknown generator {generator!r}; choose one of {[*GENERATORS, *registered]}")
    return make(inp, seed)
