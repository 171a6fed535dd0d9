"""GMM on pooled embeddings, per-class recipes and index-based generation."""

from recipe_mil.recipes.generate import SyntheticSet, generate_synthetic
from recipe_mil.recipes.gmm import GMMFit, fit_gmm
from recipe_mil.recipes.pipeline import RecipeConfig, fit_fold_recipes, learn_recipes
from recipe_mil.recipes.pool import build_pool, gmm_space
from recipe_mil.recipes.recipes import (
    BagSizeModel,
    ClassRecipe,
    fit_dirichlet,
    fit_dirichlet_multinomial,
    patient_counts,
    patient_proportions,
)

__all__ = [
    "BagSizeModel",
    "ClassRecipe",
    "GMMFit",
    "RecipeConfig",
    "SyntheticSet",
    "build_pool",
    "fit_dirichlet",
    "fit_dirichlet_multinomial",
    "fit_fold_recipes",
    "fit_gmm",
    "generate_synthetic",
    "gmm_space",
    "learn_recipes",
    "patient_counts",
    "patient_proportions",
]
