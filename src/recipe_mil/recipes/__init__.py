"""GMM on pooled embeddings, per-class recipes and index-based generation.

Only the light modules are re-exported here, so that reading synthetic patients or recipes
(e.g. for plots) does not import torch: the GMM engines live in
:mod:`recipe_mil.recipes.gmm` / :mod:`recipe_mil.recipes.gmm_torch` and the fold's recipe step
in :mod:`recipe_mil.recipes.pipeline`.
"""

from recipe_mil.recipes.generate import SyntheticSet, generate_synthetic
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
    "SyntheticSet",
    "build_pool",
    "fit_dirichlet",
    "fit_dirichlet_multinomial",
    "generate_synthetic",
    "gmm_space",
    "patient_counts",
    "patient_proportions",
]
