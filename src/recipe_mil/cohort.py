"""Synthetic patients and a final model for your own cohort, without a study (docs/method.md §10).

The study (the Snakemake workflow) measures whether synthetic patients help, fold by fold. This module
is what to use once it did: learn the recipes from every patient of a cohort of bag files, write the
synthetic cohort as bag files (:func:`generate_cohort`), train one model on all real (and synthetic)
patients (:func:`train_final_model`) and predict new patients with attention (:func:`predict_cohort`).
The console script ``recipe-mil`` (:mod:`recipe_mil.cli`) calls these functions.

Relative bag paths in a sheet are resolved against the sheet's folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recipe_mil.augment import GeneratorInput, make_synthetic
from recipe_mil.experiment import prediction_tables, real_collection
from recipe_mil.export import synthetic_bag_features, write_synthetic_bags
from recipe_mil.io.bags import read_bag
from recipe_mil.io.synthetic import write_recipes
from recipe_mil.io.tables import read_tsv
from recipe_mil.mil import BagCollection, GatedAttentionMIL, TrainConfig, concat_collections, fit_mil
from recipe_mil.names import SAFE_NAME_RULE, is_safe_name
from recipe_mil.recipes.generate import INSTANCE_SOURCES, SyntheticSet
from recipe_mil.recipes.pipeline import RecipeConfig, fit_fold_recipes
from recipe_mil.recipes.pool import pool_features, pool_instance_ids
from recipe_mil.recipes.recipes import ClassRecipe
from recipe_mil.seeds import derive_seed
from recipe_mil.sheets import SampleSheetError, check_bag_files, load_sheet, raise_problems

logger = logging.getLogger(__name__)

__all__ = [
    "INSTANCE_SOURCES",
    "SyntheticCohort",
    "cohort_patients",
    "generate_cohort",
    "predict_cohort",
    "read_cohort_sheet",
    "train_final_model",
]


def _resolve(paths: pd.Series, base: Path) -> pd.Series:
    return paths.map(lambda p: str(p) if Path(p).is_absolute() else str(base / p))


def read_cohort_sheet(path: str | os.PathLike[str], *, cohort: str = "target", labelled: bool = True) -> pd.DataFrame:
    """Read a sheet of bag files: columns ``patient``, ``label``, ``path`` (the ``.h5`` bag).

    Parameters
    ----------
    path
        Tab-separated sheet (the workflow's ``bags`` sample sheet; :func:`recipe_mil.sheets.load_sheet`).
    cohort
        Cohort given to every row (``target`` or ``external``).
    labelled
        False for new patients (``recipe-mil predict``): the ``label`` column may be absent.

    Returns
    -------
    pandas.DataFrame
        Columns ``patient, label, path, cohort`` (``label`` only when the sheet has one); ``path``
        resolved against the sheet's folder.

    Raises
    ------
    SampleSheetError
        If the sheet is malformed, a patient id repeats or is no plain name, or a bag file cannot be read or has
        another embedding width than the others.
    """
    p = Path(path)
    if labelled:
        sheet = load_sheet(p, modality="bags")
    else:
        if not p.is_file():
            raise SampleSheetError(f"sample sheet {p} does not exist")
        sheet = read_tsv(p)
        missing = [c for c in ("patient", "path") if c not in sheet]
        raise_problems(str(p), [f"missing column(s) {missing}; found {list(sheet.columns)}"] if missing else [])
        sheet = sheet[[c for c in ("patient", "label", "path") if c in sheet]].copy()
    sheet["path"] = _resolve(sheet["path"], p.parent)
    sheet["cohort"] = cohort
    dup = sheet["patient"].duplicated(keep=False)
    unsafe = sorted(str(x) for x in sheet["patient"] if not is_safe_name(x))  # ids name files and provenance
    raise_problems(
        str(p),
        ([f"patient ids repeat: {sorted(set(sheet.loc[dup, 'patient']))}"] if dup.any() else [])
        + ([f"patient ids {unsafe} are not plain names ({SAFE_NAME_RULE})"] if unsafe else []),
    )
    check_bag_files(sheet.reset_index(drop=True), source=str(p))
    return sheet.reset_index(drop=True)


def cohort_patients(
    sheet: pd.DataFrame, *, missing_class: str | None = None, external: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Give every patient of a cohort its role: all target patients train (they all enter the pool).

    With ``missing_class``, the class the target cohort lacks is learned from the ``external``
    patients of that class (role ``external``, as in the study's ``missing_class`` scenario);
    other external patients are ``unused``.

    Parameters
    ----------
    sheet
        Target-cohort patients (:func:`read_cohort_sheet`).
    missing_class
        A class without target patients, or None.
    external
        External-cohort patients (needed with ``missing_class``).

    Returns
    -------
    pandas.DataFrame
        Columns ``patient, label, cohort, role, path``.

    Raises
    ------
    ValueError
        If ``missing_class`` has target patients, or no external patient, or a patient id is in
        both sheets.
    """
    target = sheet.assign(cohort="target", role="train")
    if missing_class is None:
        return target[["patient", "label", "cohort", "role", "path"]].reset_index(drop=True)
    if (target["label"] == missing_class).any():
        raise ValueError(f"missing class {missing_class!r} has target patients; drop them or leave the class out")
    if external is None or not (external["label"] == missing_class).any():
        raise ValueError(f"missing class {missing_class!r}: the external sheet has no patient of that class")
    both = sorted(set(target["patient"]) & set(external["patient"]))
    if both:
        raise ValueError(f"patients {both[:5]} are in both the target and the external sheet")
    ext = external.assign(cohort="external", role=np.where(external["label"] == missing_class, "external", "unused"))
    out = pd.concat([target, ext], ignore_index=True)
    return out[["patient", "label", "cohort", "role", "path"]]


@dataclass
class SyntheticCohort:
    """Synthetic patients generated for a cohort, with what they were made from.

    Attributes
    ----------
    synthetic
        The synthetic patients, index-based: rows of ``features``.
    recipes
        Class -> recipe.
    pool_obs
        One row per pooled instance: ``patient``, ``label``, ``cohort``, ``cluster``.
    features
        The pool's feature matrix (float32, one row per pooled instance).
    instance_ids
        Each pooled instance's id in its patient's bag.
    meta
        K, the model-selection table and the seeds (written to ``recipes.json``).
    """

    synthetic: SyntheticSet
    recipes: dict[str, ClassRecipe]
    pool_obs: pd.DataFrame
    features: np.ndarray
    instance_ids: np.ndarray
    meta: dict[str, object] = field(default_factory=dict)

    def bags(self) -> list[np.ndarray]:
        """Return the synthetic bags' features (float32, n_instances x d), in synthetic patient order."""
        return [synthetic_bag_features(self.synthetic, i, self.features) for i in range(len(self.synthetic))]

    def write(self, out_dir: str | os.PathLike[str], *, encoder: str | None = None) -> pd.DataFrame:
        """Write ``bags/synthetic_XXXX.h5``, ``samples.tsv`` and ``recipes.json`` into ``out_dir``.

        The bags' ``encoder`` attribute is the real bags' encoder unless ``encoder`` is given.

        Returns
        -------
        pandas.DataFrame
            The sample sheet (:data:`recipe_mil.export.SHEET_COLUMNS`).
        """
        sheet = write_synthetic_bags(
            out_dir,
            self.synthetic,
            self.features,
            self.pool_obs,
            self.instance_ids,
            method="recipe",
            encoder=encoder or str(self.meta.get("encoder", "unknown")),
        )
        write_recipes(Path(out_dir) / "recipes.json", self.recipes, **self.meta)
        return sheet


def generate_cohort(
    sheet: pd.DataFrame,
    n_per_class: int,
    *,
    missing_class: str | None = None,
    external: pd.DataFrame | None = None,
    classes: Sequence[str] | None = None,
    config: RecipeConfig | None = None,
    instance_source: str = "class",
    missing_class_source: str = "target",
    seed: int = 0,
) -> SyntheticCohort:
    """Learn class recipes from every patient of a cohort and generate synthetic patients.

    The same steps as one fold of the study (:func:`recipe_mil.recipes.pipeline.fit_fold_recipes`,
    :func:`recipe_mil.augment.make_synthetic` with the ``recipe`` generator), on all patients.

    Parameters
    ----------
    sheet
        Target-cohort patients (:func:`read_cohort_sheet`).
    n_per_class
        Synthetic patients per class.
    missing_class, external
        A class the target cohort lacks and the external patients its recipe is learned from.
    classes
        Classes to keep synthetic patients of (default: every class with a recipe).
    config
        Pool, GMM and recipe settings (default :class:`~recipe_mil.recipes.pipeline.RecipeConfig`).
    instance_source, missing_class_source
        Which instances fill a class's bags (config ``generate``; one of
        :data:`~recipe_mil.recipes.generate.INSTANCE_SOURCES`).
    seed
        Seed of the GMM and of the generation (each derives its own).

    Returns
    -------
    SyntheticCohort
        ``n_per_class`` synthetic patients of each class, in class order.
    """
    patients = cohort_patients(sheet, missing_class=missing_class, external=external)
    bag_paths = dict(zip(patients["patient"], patients["path"], strict=True))
    recipe_seed, generate_seed = derive_seed(seed, "recipes"), derive_seed(seed, "generate")
    fold = fit_fold_recipes(patients, bag_paths, config or RecipeConfig(), seed=recipe_seed)
    inp = GeneratorInput(
        pool=fold.pool,
        recipes=fold.recipes,
        pooled_recipe=fold.pooled,
        classes=sorted(fold.recipes),
        config={
            "generate": {
                "n_per_class": n_per_class,
                "instance_source": instance_source,
                "missing_class_source": missing_class_source,
            }
        },
    )
    syn = make_synthetic("recipe", inp, seed=generate_seed)
    if classes is not None:
        unknown = sorted(set(classes) - set(fold.recipes))
        if unknown:
            raise ValueError(f"no recipe for classes {unknown}; recipes: {sorted(fold.recipes)}")
        syn = syn.subset(np.isin(syn.label.astype(str), list(classes)))
    gmm = fold.pool.uns["gmm"]
    meta = {
        "n_clusters": fold.gmm.n_components,
        "criterion_values": gmm["criterion_values"],
        "pool_patients": sorted(fold.pool.obs["patient"].astype(str).unique().tolist()),
        "n_per_class": n_per_class,
        "missing_class": missing_class,
        "encoder": read_bag(patients["path"].iloc[0], features=False).encoder,
        "seed": seed,
        "recipe_seed": recipe_seed,
        "generate_seed": generate_seed,
    }
    logger.info("K=%d; %d synthetic patients of %s", fold.gmm.n_components, len(syn), sorted(set(syn.label)))
    return SyntheticCohort(
        synthetic=syn,
        recipes=fold.recipes,
        pool_obs=fold.pool.obs,
        features=pool_features(fold.pool, bag_paths),
        instance_ids=pool_instance_ids(fold.pool, bag_paths),
        meta=meta,
    )


def _collection(sheet: pd.DataFrame, classes: Sequence[str]) -> BagCollection:
    return real_collection(sheet, dict(zip(sheet["patient"], sheet["path"], strict=True)), classes)[0]


def train_final_model(
    sheet: pd.DataFrame,
    config: TrainConfig,
    *,
    synthetic: pd.DataFrame | None = None,
    classes: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[GatedAttentionMIL, list[str]]:
    """Train the attention MIL on every real (and synthetic) patient: the final model.

    No patient is held out, so there is no early stopping: every epoch of ``config.epochs``
    runs and the last state is kept (choose the epochs from the study's ``history.tsv``).

    Parameters
    ----------
    sheet
        Real patients (:func:`read_cohort_sheet`).
    config
        MIL settings, seed included (:class:`recipe_mil.mil.TrainConfig`).
    synthetic
        Synthetic patients as bag files (a ``samples.tsv`` written by :func:`generate_cohort`).
    classes
        Class order of the probabilities (default: the sorted labels of both sheets).
    log
        Progress callback (one line per epoch).

    Returns
    -------
    model, classes
        The trained model and its class order.
    """
    frames = [sheet] if synthetic is None else [sheet, synthetic]
    classes = sorted({str(c) for f in frames for c in f["label"]}) if classes is None else list(classes)
    unknown = sorted({str(c) for f in frames for c in f["label"]} - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not in classes {classes}")
    train = _collection(sheet, classes)
    if synthetic is not None and len(synthetic):
        train = concat_collections(train, _collection(synthetic, classes))
    if log:
        log(f"training on {len(sheet)} real + {len(train) - len(sheet)} synthetic bags, classes {classes}")
    return fit_mil(train, None, len(classes), config, log=log).model, classes


def predict_cohort(
    model: GatedAttentionMIL,
    classes: Sequence[str],
    sheet: pd.DataFrame,
    *,
    device: str = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict new patients from their bags, with every instance's attention.

    Parameters
    ----------
    model, classes
        A model and its class order (:func:`train_final_model`; ``recipe-mil train``'s ``model.pt``).
    sheet
        Patients to predict (:func:`read_cohort_sheet` with ``labelled=False``); a ``label``
        column is copied to the predictions.
    device
        Device name.

    Returns
    -------
    predictions
        ``patient``, [``label``], ``predicted``, ``prob_<class>`` per class.
    attention
        ``patient, instance_id, attention``.
    """
    bag_paths = dict(zip(sheet["patient"], sheet["path"], strict=True))
    unlabelled = sheet.assign(label=classes[0])  # labels are not used to predict
    bags, ids = real_collection(unlabelled, bag_paths, classes)
    pred, att, _ = prediction_tables(model, bags, sheet, ids, classes, device=device)
    return pred, att
