import json

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from recipe_mil.simulate.scrna import (
    TRUTH_KEY,
    ScrnaSimParams,
    class_mean_proportions,
    cohort_design,
    external_params,
    simulate_scrna_cohort,
    write_h5ad_atomic,
)

SMALL = ScrnaSimParams(
    n_patients_per_class=3, n_genes=120, n_markers_per_type=10, cells_per_patient_mean=100, cells_per_patient_sd=30
)


@pytest.fixture(scope="module")
def demo() -> ad.AnnData:
    return simulate_scrna_cohort(ScrnaSimParams())


def test_design_matches_simulated_obs(demo):
    design = cohort_design(ScrnaSimParams())
    assert list(design.columns) == ["patient", "label", "cohort"]
    assert list(design["patient"]) == [f"P{i:03d}" for i in range(36)]
    assert list(design["label"]) == ["healthy"] * 12 + ["disease_a"] * 12 + ["disease_b"] * 12
    assert (design["cohort"] == "target").all()
    per_patient = demo.obs.groupby("patient", observed=True, sort=False).first()
    assert list(per_patient.index) == list(design["patient"])
    assert list(per_patient["label"]) == list(design["label"])
    assert list(per_patient["cohort"]) == list(design["cohort"])


def test_demo_layout(demo):
    assert sp.issparse(demo.X) and demo.X.format == "csr"
    assert demo.n_vars == 600 and 9000 < demo.n_obs < 13000
    assert demo.obs_names.is_unique
    assert all(b.startswith(p + "_") for b, p in zip(demo.obs_names, demo.obs["patient"], strict=True))
    for col in ("patient", "label", "cohort", "cell_type", "state"):
        assert demo.obs[col].dtype == "category"
    x = demo.X.data
    assert np.all(x >= 0) and np.array_equal(x, np.round(x))
    sizes = demo.obs["patient"].value_counts()
    assert sizes.min() >= 80 and sizes.std() > 40  # bag sizes vary
    truth = demo.uns[TRUTH_KEY]
    json.dumps(truth)  # JSON-serialisable
    # six shared cell types, then the built-in disease-only type of disease_b
    assert truth["cell_types"] == [f"type_{k}" for k in range(6)] + ["disease_b_only"]
    assert list(demo.obs["state"].cat.categories) == ["baseline", "shifted", "disease_only"]
    assert truth["concentration"] == 20.0
    assert set(truth["patient_proportions"]) == set(demo.obs["patient"])


def test_realised_proportions_match_cell_types(demo):
    truth = demo.uns[TRUTH_KEY]
    counts = demo.obs.groupby("patient", observed=True)["cell_type"].value_counts(normalize=True).unstack()
    for patient, props in truth["patient_proportions"].items():
        np.testing.assert_allclose(counts.loc[patient, truth["cell_types"]].to_numpy(), props, atol=1e-12)


def test_default_class_means():
    means = class_mean_proportions(ScrnaSimParams())
    np.testing.assert_allclose(means["healthy"], [0.30, 0.25, 0.20, 0.13, 0.08, 0.04])
    assert means["disease_a"][4] == pytest.approx(0.33)
    assert means["disease_b"][5] == pytest.approx(0.29)
    for p in means.values():
        assert p.sum() == pytest.approx(1.0)
    # other numbers of cell types / class names: derived from program_seed and the class name
    params = ScrnaSimParams(classes=("healthy", "x", "y"), n_cell_types=8)
    derived = class_mean_proportions(params)
    again = class_mean_proportions(ScrnaSimParams(classes=("y", "x"), n_cell_types=8))
    np.testing.assert_array_equal(derived["x"], again["x"])
    assert not np.allclose(derived["x"], derived["y"])
    assert all(np.all(p > 0) and p.sum() == pytest.approx(1.0) for p in derived.values())


def test_custom_class_proportions_validated():
    custom = {"a": [1, 1, 2], "b": [2, 1, 1]}
    params = ScrnaSimParams(classes=("a", "b"), n_cell_types=3, class_proportions=custom)
    np.testing.assert_allclose(class_mean_proportions(params)["a"], [0.25, 0.25, 0.5])
    with pytest.raises(ValueError, match="'b'"):
        class_mean_proportions(ScrnaSimParams(classes=("a", "b"), n_cell_types=3, class_proportions={"a": [1, 1, 2]}))
    with pytest.raises(ValueError, match="positive"):
        class_mean_proportions(
            ScrnaSimParams(classes=("a",), n_cell_types=3, class_proportions={"a": [1, 0, 2]}),
        )
    with pytest.raises(ValueError, match="concentration"):
        ScrnaSimParams(concentration=0)


def test_seeded_and_deterministic():
    a, b = simulate_scrna_cohort(SMALL), simulate_scrna_cohort(SMALL)
    assert (a.X != b.X).nnz == 0
    assert a.obs.equals(b.obs)
    assert a.uns[TRUTH_KEY] == b.uns[TRUTH_KEY]
    c = simulate_scrna_cohort(ScrnaSimParams(**{**SMALL.__dict__, "seed": 1}))
    assert c.shape != a.shape or (c.X != a.X).nnz > 0
    assert c.uns[TRUTH_KEY]["patient_proportions"] != a.uns[TRUTH_KEY]["patient_proportions"]
    # same program_seed: same gene programs
    assert c.uns[TRUTH_KEY]["marker_genes"] == a.uns[TRUTH_KEY]["marker_genes"]


def test_realised_proportions_average_to_class_means():
    params = ScrnaSimParams(
        n_patients_per_class=60, n_genes=40, n_markers_per_type=3, cells_per_patient_mean=150, cells_per_patient_sd=30
    )
    adata = simulate_scrna_cohort(params)
    truth = adata.uns[TRUTH_KEY]
    for c, mean in truth["class_mean_proportions"].items():
        patients = [p for p, lab in truth["patient_labels"].items() if lab == c]
        realised = np.array([truth["patient_proportions"][p] for p in patients])
        # sd of a class average is about sqrt(0.2 * 0.8 / 13 / 60) = 0.014
        np.testing.assert_allclose(realised.mean(axis=0), mean, atol=0.045)
        # within-class heterogeneity: patients differ in their mixes
        assert realised.std(axis=0).max() > 0.05


def _type_means(adata: ad.AnnData, cell_type: str) -> np.ndarray:
    x = adata.X[(adata.obs["cell_type"] == cell_type).to_numpy()]
    x = sp.diags(1.0 / np.asarray(x.sum(axis=1)).ravel()) @ x
    return np.asarray(x.mean(axis=0)).ravel()


def test_external_cohort(demo):
    ext_params = external_params(ScrnaSimParams())
    assert ext_params.program_seed == 0 and ext_params.seed == 1000 and ext_params.cohort == "external"
    ext = simulate_scrna_cohort(ext_params)
    assert set(ext.obs["label"]) == {"healthy", "disease_a"}
    assert (ext.obs["cohort"] == "external").all()
    assert list(cohort_design(ext_params)["patient"]) == [f"E{i:03d}" for i in range(16)]
    assert list(ext.var_names) == list(demo.var_names)
    # the same gene programs (the external cohort has no disease_b, so no disease_b_only type)
    ext_markers = ext.uns[TRUTH_KEY]["marker_genes"]
    assert ext_markers == {t: demo.uns[TRUTH_KEY]["marker_genes"][t] for t in ext_markers}
    # the same class means over the shared cell types
    assert ext.uns[TRUTH_KEY]["class_mean_proportions"]["disease_a"][:6] == pytest.approx(
        demo.uns[TRUTH_KEY]["class_mean_proportions"]["disease_a"][:6]
    )
    # gene means shifted by the batch effect: sd of the per-gene log ratio of a cell type's
    # mean expression, external / target, measured 0.52 with batch_shift=0.5 and 0.035 without
    no_shift = simulate_scrna_cohort(external_params(ScrnaSimParams(), batch_shift=0.0))
    target_means = _type_means(demo, "type_0")
    shifted = np.std(np.log(_type_means(ext, "type_0") / target_means))
    unshifted = np.std(np.log(_type_means(no_shift, "type_0") / target_means))
    assert shifted > 0.35 and unshifted < 0.1


def test_write_h5ad_atomic_roundtrip(tmp_path):
    adata = simulate_scrna_cohort(SMALL)
    path = tmp_path / "sub" / "cohort.h5ad"
    write_h5ad_atomic(adata, path)
    assert [p.name for p in path.parent.iterdir()] == ["cohort.h5ad"]
    back = ad.read_h5ad(path)
    assert (back.X != adata.X).nnz == 0
    assert list(back.obs["patient"].cat.categories) == list(cohort_design(SMALL)["patient"])
    assert list(back.uns[TRUTH_KEY]["cell_types"]) == adata.uns[TRUTH_KEY]["cell_types"]
