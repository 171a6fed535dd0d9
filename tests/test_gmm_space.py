"""The GMM space and K: clusters recover the simulated cell types on every demo fold's training pool (issue 11)."""

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import adjusted_rand_score

from recipe_mil.embed.flow import FlowEmbedParams, parse_panel, write_flow_bag
from recipe_mil.embed.scrna import ScrnaEmbedParams, write_scrna_bags
from recipe_mil.io.bags import read_bag, write_bag
from recipe_mil.recipes.gmm import fit_gmm
from recipe_mil.recipes.pipeline import RecipeConfig, fit_fold_recipes
from recipe_mil.recipes.pool import fit_projection, pool_instance_ids, resolve_standardize
from recipe_mil.seeds import derive_seed
from recipe_mil.simulate.dataset import simulate_dataset, simulate_file_dataset
from recipe_mil.simulate.flow import event_populations
from recipe_mil.splits import make_splits, scenario_patients

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "config/config.yaml").read_text())


def demo_recipe_config(modality: str) -> RecipeConfig:
    """The demo config's pool/GMM/recipe settings as the recipes rule builds them (schema defaults below)."""
    pool = {"standardize": "auto", "n_pcs": 16, **DEMO.get("pool", {})}
    pool["standardize"] = resolve_standardize(pool["standardize"], modality)
    return RecipeConfig(**pool, **DEMO.get("gmm", {}), **DEMO.get("recipes", {}))


def demo_fold_patients(sheet: pd.DataFrame):
    """Every fold x scenario of the demo config (the scenarios the demo runs on this dataset's classes)."""
    s = {"n_folds": 3, "n_repeats": 1, "val_fraction": 0.25, **DEMO["splits"]}
    splits = make_splits(
        sheet, n_folds=s["n_folds"], n_repeats=s["n_repeats"], val_fraction=s["val_fraction"], seed=DEMO["seed"]
    )
    sc = DEMO["scenarios"]
    scenarios = (["full"] if sc.get("full", True) else []) + [
        f"low_data-n{n}-d{d}" for n in sc["low_data"]["n_per_class"] for d in range(sc["low_data"].get("draws", 1))
    ]
    scenarios += [f"missing_class-{c}" for c in sc["missing_class"]["classes"] if c in set(sheet["label"])]
    for r in range(s["n_repeats"]):
        for f in range(s["n_folds"]):
            for scenario in scenarios:
                yield scenario, f, scenario_patients(splits, repeat=r, fold=f, scenario=scenario, seed=DEMO["seed"])


def fold_aris(sheet, paths, truth_of, modality, dataset):
    out = []
    for scenario, fold, patients in demo_fold_patients(sheet):
        seed = derive_seed(DEMO["seed"], "recipes", dataset, scenario, 0, fold)  # as the recipes rule derives it
        fit = fit_fold_recipes(patients, paths, demo_recipe_config(modality), seed=seed)
        truth = truth_of(fit.pool.obs.assign(instance_id=pool_instance_ids(fit.pool, paths)))  # ids: in the bags
        out.append((scenario, fold, fit.gmm.n_components, adjusted_rand_score(truth, fit.pool.obs["cluster"])))
    return out


@pytest.fixture(scope="module")
def demo_scrna(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo_scrna")
    ds = DEMO["datasets"]["demo_scrna"]
    simulate_dataset(
        ds["simulate"],
        classes=ds["classes"],
        target_path=work / "target.h5ad",
        external_path=work / "external.h5ad",
        sheet_path=work / "samples.tsv",
    )
    sheet = pd.read_csv(work / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    paths = {p: str(work / f"{p}.h5") for p in sheet["patient"]}
    write_scrna_bags(
        work / "target.h5ad",
        sheet,
        paths,
        ScrnaEmbedParams(**ds["scrna"], seed=DEMO["seed"]),
        external_h5ad=work / "external.h5ad",
    )
    cells = pd.concat(
        [ad.read_h5ad(work / f, backed="r").obs["cell_type"].astype(str) for f in ("target.h5ad", "external.h5ad")]
    )
    return sheet, paths, lambda obs: cells.loc[obs["instance_id"].astype(str)].to_numpy()


@pytest.fixture(scope="module")
def demo_flow(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo_flow")
    ds = DEMO["datasets"]["demo_flow"]
    sheet = simulate_file_dataset(
        ds["simulate"], modality="flow", classes=ds["classes"], raw_dir=work / "files", sheet_path=work / "samples.tsv"
    )
    params = FlowEmbedParams(**ds["flow"], seed=DEMO["seed"])
    markers = [pm.marker for pm in parse_panel(ds["flow"]["panel"])]
    paths = {}
    for row in sheet.itertuples():
        paths[row.patient] = str(work / f"{row.patient}.h5")
        write_flow_bag(
            row.path, paths[row.patient], patient=row.patient, label=row.label, params=params, features=markers
        )
    folders = {row.patient: Path(row.path).parent for row in sheet.itertuples()}

    def truth(obs):
        out = np.empty(len(obs), dtype=object)
        for p, idx in obs.groupby("patient", observed=True).indices.items():
            pops = np.asarray(event_populations(folders[p], p))
            out[idx] = pops[obs["instance_id"].iloc[idx].astype(int).to_numpy()]
        return out.astype(str)

    return sheet, paths, truth


def test_scrna_clusters_are_the_cell_types_on_every_demo_fold(demo_scrna):
    # measured: K=6, ARI 1.00 on 5 of 6 pools, 0.93 on one (the standardised space of the first version: K=2-4,
    # ARI 0.15-0.66, with widening down to K=2)
    results = fold_aris(*demo_scrna, "scrna", "demo_scrna")
    assert len(results) == 6
    for scenario, fold, k, ari in results:
        assert ari >= 0.9, (scenario, fold, k, ari)


def test_flow_clusters_are_the_populations_on_every_demo_fold(demo_flow):
    # six populations and debris; a grid of even K (4, 6, 8) without refinement settled on K=8, ARI 0.70-0.76
    results = fold_aris(*demo_flow, "flow", "demo_flow")
    assert len(results) == 6
    for scenario, fold, k, ari in results:
        assert ari >= 0.9, (scenario, fold, k, ari)


def test_recipes_record_truth_ari_and_the_gmm_space(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, size=(4, 5))
    rows, paths = [], {}
    for i in range(8):
        types = rng.integers(0, 4, size=150)
        x = centres[types] + rng.normal(0, 1, size=(150, 5))
        paths[f"P{i}"] = str(tmp_path / f"P{i}.h5")
        write_bag(
            paths[f"P{i}"],
            x,
            range(150),
            patient=f"P{i}",
            label="ab"[i % 2],
            encoder="t",
            truth={"cell_type": types.astype(str)},
        )
        rows.append({"patient": f"P{i}", "label": "ab"[i % 2], "cohort": "target", "role": "train"})
    assert set(read_bag(paths["P0"]).truth) == {"cell_type"}
    fit = fit_fold_recipes(pd.DataFrame(rows), paths, RecipeConfig(n_components=[2, 4, 6], n_pcs=None), seed=0)
    space = fit.pool.uns["gmm"]
    assert space["truth_ari"] == pytest.approx(1.0)
    assert space["k_at_grid_edge"] is False and fit.gmm.n_components == 4
    assert space["standardized"] is True  # blob centres make the features correlate: put on one scale
    assert fit.pooled is not None and sorted(fit.pooled.patients) == sorted(paths)


def test_auto_standardisation_never_rescales_scores_and_scales_correlated_markers():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(2000, 6)) * np.array([10, 5, 2, 1, 0.5, 0.2])  # PCA-like: decorrelated, ranked variances
    assert fit_projection([scores], standardize="auto", n_pcs=3).standardized is False
    markers = rng.normal(size=(2000, 1)) @ np.ones((1, 6)) + rng.normal(0, 0.3, size=(2000, 6))
    assert fit_projection([markers * [1, 100, 1, 1, 1, 1]], standardize="auto", n_pcs=3).standardized is True
    assert resolve_standardize("auto", "scrna") is False
    assert resolve_standardize("auto", "flow") == "auto" and resolve_standardize(True, "scrna") is True


def blobs(k: int, n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 8, size=(k, 3))
    return (centres[np.arange(n) % k] + rng.normal(0, 1, size=(n, 3))).astype(np.float64)


def test_grid_is_widened_past_an_edge_and_refined_between_its_points(caplog):
    x = blobs(6)
    fit = fit_gmm(x, [2, 3, 4], n_init=2, widen=3, seed=0)
    assert fit.n_components == 6 and not fit.at_grid_edge
    assert set(fit.bic) >= {2, 3, 4, 5, 6, 7}
    with caplog.at_level(logging.WARNING):
        edge = fit_gmm(x, [2, 3, 4], n_init=2, widen=1, seed=0)
    assert edge.n_components == 5 and edge.at_grid_edge
    assert "still on the edge" in caplog.text
    # a coarse grid of even K around 7 populations: the refinement tries 7 itself
    fit7 = fit_gmm(blobs(7, 700), [4, 6, 8], n_init=2, widen=3, seed=0)
    assert fit7.n_components == 7 and 7 in fit7.bic and not fit7.at_grid_edge
    # without widening the first version's behaviour stays available
    assert fit_gmm(x, [2, 3, 4], n_init=2, widen=0, seed=0).n_components == 4
