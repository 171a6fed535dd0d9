"""One fold's recipe step: pool, GMM, per-patient proportions, class recipes."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd

from recipe_mil.recipes.gmm import GMMFit, fit_gmm
from recipe_mil.recipes.pool import align_external, build_pool, gmm_space
from recipe_mil.recipes.recipes import ClassRecipe, learn_recipe, patient_counts

logger = logging.getLogger(__name__)


@dataclass
class RecipeConfig:
    """Settings of the pool, GMM and recipe steps (config keys ``pool``, ``gmm``, ``recipes``).

    Attributes
    ----------
    standardize, n_pcs
        Transform of the pool before the GMM.
    n_components
        Fixed K or a grid of K for BIC selection.
    covariance_type, n_init, max_iter, reg_covar, subsample, engine, device
        GMM options (see :func:`recipe_mil.recipes.gmm.fit_gmm`).
    proportions
        ``hard`` (cluster counts) or ``soft`` (mean responsibilities).
    align_external
        ``none``, ``centre`` or ``standardise``: per-feature alignment of external-cohort
        rows to the target rows before pooling.
    """

    standardize: bool = True
    n_pcs: int | None = 16
    n_components: int | Sequence[int] = field(default_factory=lambda: [4, 6, 8, 10])
    covariance_type: str = "full"
    n_init: int = 3
    max_iter: int = 200
    reg_covar: float = 1e-4
    subsample: int | None = 20000
    engine: str = "torch"
    device: str = "auto"
    proportions: str = "hard"
    align_external: str = "none"


def learn_recipes(pool: ad.AnnData, assignments: np.ndarray, n_clusters: int) -> dict[str, ClassRecipe]:
    """Learn one recipe per class present in the pool.

    Parameters
    ----------
    pool
        Pool with ``obs`` columns ``patient``, ``label`` and ``cohort``.
    assignments
        Hard clusters (n,) or responsibilities (n, K) of the pool rows.
    n_clusters
        K.

    Returns
    -------
    dict
        Class -> recipe, learned from that class's pooled patients.
    """
    patients = pool.obs["patient"].astype(str).to_numpy()
    uniq, codes = np.unique(patients, return_inverse=True)
    counts = patient_counts(assignments, codes, len(uniq), n_clusters)
    sizes = np.bincount(codes, minlength=len(uniq))
    meta = pool.obs.groupby("patient", observed=True)[["label", "cohort"]].first().loc[uniq]
    recipes: dict[str, ClassRecipe] = {}
    for cls, idx in meta.groupby("label", observed=True).indices.items():
        cohorts = meta["cohort"].iloc[idx].unique()
        recipes[str(cls)] = learn_recipe(counts[idx], sizes[idx], uniq[idx].tolist(), ",".join(map(str, cohorts)))
        logger.info("class %s: recipe from %d patients (%s fit)", cls, len(idx), recipes[str(cls)].dirichlet_fit)
    return recipes


def fit_fold_recipes(
    patients: pd.DataFrame,
    bag_paths: Mapping[str, str],
    config: RecipeConfig,
    *,
    seed: int,
) -> tuple[ad.AnnData, dict[str, ClassRecipe], GMMFit]:
    """Pool the fold's training patients, fit the GMM and learn the class recipes.

    The GMM is fitted on the target cohort's rows; external-cohort rows (the patients of
    a missing class, role ``external``) are aligned if asked, then assigned to its clusters,
    so only their statistics (the recipe) cross cohorts.

    Parameters
    ----------
    patients
        The fold's patients with roles (``train`` and ``external`` rows are pooled).
    bag_paths
        Patient -> bag file.
    config
        Pool/GMM/recipe settings.
    seed
        Seed for the PCA and the GMM.

    Returns
    -------
    pool
        AnnData with ``obs['cluster']`` and ``obsm['X_gmm']`` (the GMM's input space).
    recipes
        Class -> recipe.
    gmm
        The fitted GMM with its BIC table.
    """
    pool = build_pool(patients, bag_paths)
    cohorts = pool.obs["cohort"].astype(str).to_numpy()
    pool.X = align_external(pool.X, cohorts, config.align_external)
    target = cohorts == "target"
    z = gmm_space(pool.X, standardize=config.standardize, n_pcs=config.n_pcs, fit_rows=target)  # exact PCA: no seed
    gmm = fit_gmm(
        z[target],
        config.n_components,
        covariance_type=config.covariance_type,
        n_init=config.n_init,
        max_iter=config.max_iter,
        reg_covar=config.reg_covar,
        subsample=config.subsample,
        seed=seed,
        engine=config.engine,
        device=config.device,
    )
    clusters = gmm.predict(z)
    assignments = gmm.predict_proba(z) if config.proportions == "soft" else clusters
    pool.obs["cluster"] = clusters.astype(np.int64)
    pool.obsm["X_gmm"] = z.astype(np.float32)
    pool.uns["gmm"] = {"n_components": gmm.n_components, "bic": {str(k): v for k, v in gmm.bic.items()}}
    recipes = learn_recipes(pool, assignments, gmm.n_components)
    return pool, recipes, gmm
