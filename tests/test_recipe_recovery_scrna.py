"""On the simulated scRNA-seq cohort, learned recipes recover the ground-truth class proportions."""

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from recipe_mil.embed.scrna import ScrnaEmbedParams, embed_scrna
from recipe_mil.io.bags import write_bag
from recipe_mil.recipes.pipeline import RecipeConfig, fit_fold_recipes
from recipe_mil.recipes.pool import pool_instance_ids
from recipe_mil.simulate.scrna import TRUTH_KEY, ScrnaSimParams, simulate_scrna_cohort


def test_scrna_recipes_recover_truth(tmp_path):
    # data shaped as RECIPE models them: classes differ only by their cell-type proportions
    params = ScrnaSimParams(
        n_patients_per_class=20,
        n_genes=400,
        cells_per_patient_mean=200,
        disease_only={},
        state_shift={},
        patient_effect_sd=0.0,
    )
    adata = simulate_scrna_cohort(params)
    truth = adata.uns[TRUTH_KEY]
    embedding = embed_scrna(adata, ScrnaEmbedParams(n_top_genes=200, n_pcs=20))
    labels = adata.obs.groupby("patient", observed=True)["label"].first().astype(str)
    paths = {}
    for patient, (x, barcodes) in embedding.items():
        paths[patient] = str(tmp_path / f"{patient}.h5")
        write_bag(paths[patient], x, barcodes, patient=patient, label=labels[patient], encoder="scanpy-pca")
    patients = pd.DataFrame({"patient": list(paths), "label": labels[list(paths)].to_numpy(), "cohort": "target"})
    fold = fit_fold_recipes(
        patients.assign(role="train"), paths, RecipeConfig(n_components=[4, 6, 8], n_pcs=16), seed=0
    )
    pool, recipes, gmm = fold.pool, fold.recipes, fold.gmm
    # BIC finds the six simulated cell types and the clusters are the cell types
    assert gmm.n_components == params.n_cell_types
    cell_type = adata.obs.loc[pool_instance_ids(pool, paths), "cell_type"].astype(str).to_numpy()
    conf = pd.crosstab(pool.obs["cluster"].to_numpy(), cell_type)
    rows, cols = linear_sum_assignment(-conf.to_numpy())
    assert conf.to_numpy()[rows, cols].sum() / conf.to_numpy().sum() > 0.98  # measured: 1.0
    order = [dict(zip(conf.columns[cols], conf.index[rows], strict=True))[t] for t in truth["cell_types"]]
    for cls in params.classes:
        learned = np.asarray(recipes[cls].mean_proportions)[order]
        # against the realised mean of the class's patients (what the data contain)
        members = [p for p in truth["patient_labels"] if truth["patient_labels"][p] == cls]
        realised = np.mean([truth["patient_proportions"][p] for p in members], axis=0)
        np.testing.assert_allclose(learned, realised, atol=0.02)
        # against the simulator's class Dirichlet mean (20 patients: sampling sd of a mean up to ~0.023)
        np.testing.assert_allclose(learned, truth["class_mean_proportions"][cls], atol=0.06)
