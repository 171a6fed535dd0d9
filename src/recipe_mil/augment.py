"""One entry point for every method that adds synthetic patients (docs/method.md §5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad

from recipe_mil.baselines import psemix_bags, remix_bags, shuffle_bags
from recipe_mil.recipes.generate import SyntheticSet, generate_synthetic
from recipe_mil.recipes.recipes import ClassRecipe

#: methods whose synthetic bags a generator writes (``recipe_candidates`` feeds ``recipe_selected``)
GENERATORS = ("shuffle", "remix", "psemix", "recipe", "recipe_candidates")
AUGMENTED_METHODS = ("shuffle", "remix", "psemix", "recipe", "recipe_selected")
METHODS = ("real_only", "real_external", *AUGMENTED_METHODS)


def instance_sources(recipes: Mapping[str, ClassRecipe], *, default: str, missing_class: str) -> dict[str, str]:
    """Per-class ``instance_source``: ``missing_class`` for recipes learned on the external cohort only."""
    return {c: (missing_class if r.cohort == "external" else default) for c, r in recipes.items()}


def make_synthetic(
    generator: str,
    pool: ad.AnnData,
    recipes: Mapping[str, ClassRecipe],
    classes: Sequence[str],
    config: Mapping[str, Any],
    *,
    seed: int,
) -> SyntheticSet:
    """Make one method's synthetic patients from a fold's pool.

    Parameters
    ----------
    generator
        One of :data:`GENERATORS`.
    pool
        The fold's pool (``obs``: ``patient``, ``label``, ``cohort``, ``cluster``).
    recipes
        The fold's class recipes.
    classes
        All class names (soft-target columns); bags are made for the classes in the pool.
    config
        The workflow config (keys ``generate``, ``select``, ``remix``, ``psemix``).
    seed
        Random seed.

    Returns
    -------
    SyntheticSet
        ``generate.n_per_class`` bags per class (``select.oversample`` times more for
        ``recipe_candidates``).
    """
    g = config["generate"]
    obs = pool.obs
    present = [c for c in classes if c in set(obs["label"].astype(str))]
    n = g["n_per_class"]
    if generator in ("recipe", "recipe_candidates"):
        if generator == "recipe_candidates":
            n *= config["select"]["oversample"]
        return generate_synthetic(
            recipes,
            obs["cluster"].to_numpy(),
            obs["label"].astype(str).to_numpy(),
            obs["cohort"].astype(str).to_numpy(),
            n_per_class=n,
            instance_source=instance_sources(
                recipes, default=g["instance_source"], missing_class=g["missing_class_source"]
            ),
            seed=seed,
        )
    if generator == "shuffle":
        return shuffle_bags(obs, present, n_per_class=n, seed=seed)
    if generator == "remix":
        r = config["remix"]
        return remix_bags(
            pool.X, obs, present, n_per_class=n, n_prototypes=r["n_prototypes"], modes=r["modes"], p=r["p"], seed=seed
        )
    if generator == "psemix":
        p = config["psemix"]
        return psemix_bags(
            pool.X,
            obs,
            list(classes),
            n_per_class=n,
            n_pseudo=p["n_pseudo"],
            n_prototypes=p["n_prototypes"],
            alpha=p["alpha"],
            seed=seed,
        )
    raise ValueError(f"unknown generator {generator!r}; choose one of {GENERATORS}")
