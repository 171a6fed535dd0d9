"""One fold's recipe step: pool, GMM, per-patient proportions, class recipes."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from recipe_mil.io.bags import read_bags
from recipe_mil.recipes.gmm import GMMFit, fit_gmm
from recipe_mil.recipes.pool import (
    Alignment,
    build_pool,
    fit_alignment,
    fit_projection,
    pool_chunks,
    pool_features,
    project_pool,
)
from recipe_mil.recipes.recipes import ClassRecipe, fit_class_dirichlets, learn_recipe, patient_counts

logger = logging.getLogger(__name__)


_GMM_OPTIONS = (
    "covariance_type",
    "n_init",
    "max_iter",
    "reg_covar",
    "subsample",
    "engine",
    "device",
    "widen",
    "criterion",
)  # RecipeConfig fields passed to fit_gmm as keyword arguments of the same name


@dataclass
class RecipeConfig:
    """Settings of the pool, GMM and recipe steps (config keys ``pool``, ``gmm``, ``recipes``).

    Attributes
    ----------
    standardize, n_pcs
        Transform of the pool before the GMM (``standardize``: true, false or ``auto``;
        see :func:`recipe_mil.recipes.pool.fit_projection`).
    n_components
        Fixed K or a grid of K for BIC selection.
    covariance_type, n_init, max_iter, reg_covar, subsample, engine, device, widen, criterion
        GMM options, passed to :func:`recipe_mil.recipes.gmm.fit_gmm` by the same names.
    proportions
        ``hard`` (cluster counts) or ``soft`` (mean responsibilities).
    align_external
        ``none``, ``centre`` or ``standardise``: per-feature alignment of external-cohort
        rows to the target rows before pooling, from classes both cohorts share.
    concentration, prior_weight
        How the class Dirichlets' concentrations are estimated
        (:func:`recipe_mil.recipes.recipes.fit_class_dirichlets`).
    """

    standardize: bool | str = "auto"
    n_pcs: int | None = 16
    n_components: int | Sequence[int] = field(default_factory=lambda: [4, 6, 8, 10])
    covariance_type: str = "full"
    n_init: int = 3
    max_iter: int = 200
    reg_covar: float = 1e-4
    subsample: int | None = 20000
    engine: str = "torch"
    device: str = "auto"
    widen: int = 3
    criterion: str = "icl"
    proportions: str = "hard"
    align_external: str = "none"
    concentration: str = "shrunk"
    prior_weight: float = 4.0


def learn_recipes(
    pool: ad.AnnData,
    assignments: np.ndarray,
    n_clusters: int,
    *,
    concentration: str = "shrunk",
    prior_weight: float = 4.0,
) -> dict[str, ClassRecipe]:
    """Learn one recipe per class present in the pool.

    Parameters
    ----------
    pool
        Pool with ``obs`` columns ``patient``, ``label`` and ``cohort``.
    assignments
        Hard clusters (n,) or responsibilities (n, K) of the pool rows.
    n_clusters
        K.
    concentration, prior_weight
        How the class Dirichlets' concentrations are estimated
        (:func:`~recipe_mil.recipes.recipes.fit_class_dirichlets`).

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
    members = {str(c): idx for c, idx in meta.groupby("label", observed=True).indices.items()}
    dirichlets = fit_class_dirichlets(
        {c: counts[idx] for c, idx in members.items()}, concentration=concentration, prior_weight=prior_weight
    )
    recipes: dict[str, ClassRecipe] = {}
    for cls, idx in members.items():
        cohorts = meta["cohort"].iloc[idx].unique()
        recipes[cls] = learn_recipe(
            counts[idx], sizes[idx], uniq[idx].tolist(), ",".join(map(str, cohorts)), dirichlet=dirichlets[cls]
        )
        logger.info(
            "class %s: recipe from %d patients (%s fit, concentration %.1f)",
            cls,
            len(idx),
            recipes[cls].dirichlet_fit,
            sum(recipes[cls].alpha),
        )
    return recipes


def truth_ari(obs: pd.DataFrame, clusters: np.ndarray) -> dict[str, float | None]:
    """Return the adjusted Rand indices of the clusters against the simulated truth (None without one).

    ``truth_ari``: against the simulated cell type; ``truth_ari_state``: against cell type and
    state together (a shifted sub-state of a type counts as its own group).
    """
    out: dict[str, float | None] = {"truth_ari": None, "truth_ari_state": None}
    if "truth_cell_type" not in obs:
        return out
    types = obs["truth_cell_type"].astype(str).to_numpy()
    out["truth_ari"] = float(adjusted_rand_score(types, clusters))
    if "truth_state" in obs:
        states = np.char.add(np.char.add(types.astype(str), "/"), obs["truth_state"].astype(str).to_numpy().astype(str))
        out["truth_ari_state"] = float(adjusted_rand_score(states, clusters))
    return out


def learn_pooled_recipe(
    pool: ad.AnnData, assignments: np.ndarray, n_clusters: int, *, cohort: str = "target"
) -> ClassRecipe | None:
    """One recipe learned from every pooled patient of ``cohort`` together, whatever the class.

    The control ``ablation_pooled_proportions`` generates every class along it: it keeps the
    instance source and drops the class-specific proportions. None if no pooled patient is
    of ``cohort``.
    """
    rows = (pool.obs["cohort"].astype(str) == cohort).to_numpy()
    if not rows.any():
        return None
    patients = pool.obs["patient"].astype(str).to_numpy()[rows]
    uniq, codes = np.unique(patients, return_inverse=True)
    counts = patient_counts(assignments[rows], codes, len(uniq), n_clusters)
    return learn_recipe(counts, np.bincount(codes, minlength=len(uniq)), uniq.tolist(), cohort)


@dataclass
class FoldRecipes:
    """What the recipe step of one fold learns.

    Attributes
    ----------
    pool
        The pool's row index (no features: :func:`~recipe_mil.recipes.pool.pool_features`
        reads them from the bags) with ``obs['cluster']``; ``uns['gmm']`` describes the space
        and the K search, ``uns['projection']`` the map to the GMM space, ``uns['gmm_model']``
        the fitted mixture and ``uns['alignment']`` the external-cohort alignment where one was fitted.
    recipes
        Class -> recipe.
    gmm
        The fitted GMM with its criterion table.
    pooled
        The recipe of all target training patients together (for the pooled-proportions
        control), or None.
    """

    pool: ad.AnnData
    recipes: dict[str, ClassRecipe]
    gmm: GMMFit
    pooled: ClassRecipe | None


def alignment_reference(patients: pd.DataFrame) -> pd.DataFrame:
    """External patients whose class the fold's target training patients also have.

    Their instances define the external-to-target alignment and nothing else: they are
    never pooled, clustered or re-mixed. External patients are never validation or test
    patients, so no held-out patient is read.
    """
    train_labels = set(patients.loc[(patients["cohort"] == "target") & (patients["role"] == "train"), "label"])
    ext = (patients["cohort"] == "external") & ~patients["role"].isin(["val", "test"])
    return patients[ext & patients["label"].isin(train_labels)].reset_index(drop=True)


def align_pool(pool: ad.AnnData, patients: pd.DataFrame, bag_paths: Mapping[str, str], mode: str) -> Alignment:
    """Fit the alignment of the pool's external rows to the target cohort, from the classes both share.

    The map is stored in ``pool.uns['alignment']``, where :func:`~recipe_mil.recipes.pool.pool_features`
    applies it to the external rows it reads. The target rows are read for the fit (per-class means
    and standard deviations) and dropped afterwards.

    Raises
    ------
    ValueError
        If the external cohort has no patient of a class the target training patients have.
    """
    ref = alignment_reference(patients)
    obs = pool.obs
    target = (obs["cohort"] == "target").to_numpy()
    if ref.empty:
        ext_labels = sorted(set(patients.loc[patients["cohort"] == "external", "label"]))
        raise ValueError(
            f"recipes.align_external={mode!r}: the external cohort ({ext_labels}) shares no class with this fold's "
            f"target training patients ({sorted(set(obs['label'][target].astype(str)))}), so a cohort shift "
            "cannot be told from a class difference; set recipes.align_external: none"
        )
    feats, offsets, _ = read_bags([bag_paths[p] for p in ref["patient"]])
    ref_labels = np.repeat(ref["label"].to_numpy(), np.diff(offsets))
    pool.uns.pop("alignment", None)
    alignment = fit_alignment(
        pool_features(pool, bag_paths, rows=target),
        obs["label"].astype(str).to_numpy()[target],
        feats,
        ref_labels,
        mode,
    )
    pool.uns["alignment"] = alignment.to_uns()
    logger.info(
        "aligned %d external instances (%s) using classes %s", int((~target).sum()), mode, list(alignment.classes)
    )
    return alignment


def gmm_parameters(gmm: GMMFit, covariance_type: str) -> dict[str, object]:
    """Return the fitted mixture's parameters for ``pool.uns['gmm_model']`` (weights, means, covariances)."""
    model = gmm.model
    return {
        "covariance_type": covariance_type,
        "weights": np.asarray(model.weights_, np.float64),
        "means": np.asarray(model.means_, np.float64),
        "covariances": np.asarray(model.covariances_, np.float64),
    }


def fit_fold_recipes(
    patients: pd.DataFrame,
    bag_paths: Mapping[str, str],
    config: RecipeConfig,
    *,
    seed: int,
) -> FoldRecipes:
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
    FoldRecipes
        Pool, class recipes, GMM and the pooled target recipe.
    """
    pool = build_pool(patients, bag_paths)
    cohorts = pool.obs["cohort"].astype(str).to_numpy()
    target = cohorts == "target"
    alignment = None
    if config.align_external != "none" and not target.all():
        alignment = align_pool(pool, patients, bag_paths, config.align_external)
    # streamed from the bags: one pass for the moments of the target rows, one for the projection of every row
    projection = fit_projection(
        pool_chunks(pool, bag_paths, rows=target), standardize=config.standardize, n_pcs=config.n_pcs
    )
    z = project_pool(pool, bag_paths, projection)
    logger.info(
        "GMM space: %s, %s (largest feature correlation %.3f)",
        "standardised" if projection.standardized else "not standardised",
        f"{projection.components.shape[1]} principal components"
        if projection.components is not None
        else "all features",
        projection.max_abs_correlation,
    )
    gmm = fit_gmm(z[target], config.n_components, seed=seed, **{k: getattr(config, k) for k in _GMM_OPTIONS})
    clusters = gmm.predict(z)
    assignments = gmm.predict_proba(z) if config.proportions == "soft" else clusters
    pool.obs["cluster"] = clusters.astype(np.int64)
    pool.uns["projection"] = projection.to_uns()
    pool.uns["gmm_model"] = gmm_parameters(gmm, config.covariance_type)
    pool.uns["gmm"] = {
        "n_components": gmm.n_components,
        "criterion_values": {str(k): v for k, v in sorted(gmm.bic.items())},
        "k_at_grid_edge": gmm.at_grid_edge,
        "standardized": projection.standardized,
        "max_abs_correlation": projection.max_abs_correlation,
        "n_pcs": None if projection.components is None else int(projection.components.shape[1]),
        **truth_ari(pool.obs, clusters),
        "align_external": config.align_external,
        "alignment_classes": [] if alignment is None else list(alignment.classes),
    }
    recipes = learn_recipes(
        pool, assignments, gmm.n_components, concentration=config.concentration, prior_weight=config.prior_weight
    )
    return FoldRecipes(pool, recipes, gmm, learn_pooled_recipe(pool, assignments, gmm.n_components))
