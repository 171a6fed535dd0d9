import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from recipe_mil.embed.scrna import ScrnaEmbedParams, embed_scrna, h5ad_patients, write_scrna_bags
from recipe_mil.io.bags import read_bag
from recipe_mil.simulate.scrna import (
    ScrnaSimParams,
    cohort_design,
    external_params,
    simulate_scrna_cohort,
    write_h5ad_atomic,
)

SMALL = ScrnaSimParams(
    n_patients_per_class=2, n_genes=150, n_markers_per_type=10, cells_per_patient_mean=100, cells_per_patient_sd=20
)
SMALL_EMBED = ScrnaEmbedParams(n_top_genes=100, n_pcs=10)


@pytest.fixture(scope="module")
def demo() -> tuple[ad.AnnData, ad.AnnData]:
    params = ScrnaSimParams()
    return simulate_scrna_cohort(params), simulate_scrna_cohort(external_params(params))


@pytest.fixture(scope="module")
def demo_embedding(demo) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    target, external = demo
    return embed_scrna(target, ScrnaEmbedParams(), external=external)


@pytest.fixture()
def small_files(tmp_path) -> tuple[str, str, pd.DataFrame]:
    target_params = SMALL
    ext_params = external_params(SMALL, n_patients_per_class=2)
    target_path, ext_path = str(tmp_path / "target.h5ad"), str(tmp_path / "external.h5ad")
    write_h5ad_atomic(simulate_scrna_cohort(target_params), target_path)
    write_h5ad_atomic(simulate_scrna_cohort(ext_params), ext_path)
    sheet = pd.concat([cohort_design(target_params), cohort_design(ext_params)], ignore_index=True)
    return target_path, ext_path, sheet


def _cell_types(adatas: list[ad.AnnData]) -> dict[str, str]:
    out: dict[str, str] = {}
    for adata in adatas:
        out.update(zip(adata.obs_names, adata.obs["cell_type"].astype(str), strict=True))
    return out


def _stack(embedding, patients, cell_types):
    x = np.concatenate([embedding[p][0] for p in patients])
    y = np.array([cell_types[b] for p in patients for b in embedding[p][1]])
    return x, y


def test_embedding_shapes(demo, demo_embedding):
    target, external = demo
    assert list(demo_embedding) == list(target.obs["patient"].cat.categories) + list(
        external.obs["patient"].cat.categories
    )
    for adata in demo:
        for patient, cells in adata.obs.groupby("patient", observed=True).groups.items():
            features, barcodes = demo_embedding[patient]
            assert features.dtype == np.float32 and features.shape == (len(cells), 30)
            assert list(barcodes) == list(cells)


def test_knn_recovers_cell_types_in_shared_space(demo, demo_embedding):
    target, external = demo
    cell_types = _cell_types([target, external])
    x_t, y_t = _stack(demo_embedding, target.obs["patient"].cat.categories, cell_types)
    x_e, y_e = _stack(demo_embedding, external.obs["patient"].cat.categories, cell_types)
    knn = KNeighborsClassifier(n_neighbors=15)
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    # measured: 1.000 (5-fold CV on the 10,523 target cells)
    assert cross_val_score(knn, x_t, y_t, cv=cv).mean() >= 0.95
    # measured: 1.000 (kNN fitted on target cells, scored on the 4,899 external cells, batch_shift=0.5)
    assert knn.fit(x_t, y_t).score(x_e, y_e) >= 0.95


def test_write_bags_one_per_patient(small_files, tmp_path):
    target_path, ext_path, sheet = small_files
    out_paths = {p: str(tmp_path / "bags" / f"{p}.h5") for p in sheet["patient"]}
    write_scrna_bags(target_path, sheet, out_paths, SMALL_EMBED, external_h5ad=ext_path)
    cells = pd.concat([ad.read_h5ad(target_path).obs, ad.read_h5ad(ext_path).obs])
    for row in sheet.itertuples():
        bag = read_bag(out_paths[row.patient])
        expected = cells.index[(cells["patient"] == row.patient).to_numpy()]
        assert bag.patient == row.patient and bag.label == row.label and bag.encoder == "scanpy-pca"
        assert bag.features.shape == (len(expected), 10)
        assert list(bag.instance_ids) == list(expected)


def test_write_bags_sheet_subset_and_layer(small_files, tmp_path):
    target_path, _, sheet = small_files
    adata = ad.read_h5ad(target_path)
    adata.layers["counts"] = adata.X.copy()
    adata.X = sp.csr_matrix(adata.X.shape, dtype=np.float32)  # X is not the counts
    layered = str(tmp_path / "layered.h5ad")
    write_h5ad_atomic(adata, layered)
    sub = sheet[sheet["cohort"] == "target"].iloc[:3]
    out_paths = {p: str(tmp_path / f"{p}.h5") for p in sub["patient"]}
    write_scrna_bags(layered, sub, out_paths, ScrnaEmbedParams(layer="counts", n_top_genes=100, n_pcs=10))
    direct = embed_scrna(
        adata[adata.obs["patient"].isin(sub["patient"])].copy(),
        ScrnaEmbedParams(n_pcs=10, n_top_genes=100, layer="counts"),
    )
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == sorted(f"{p}.h5" for p in sub["patient"])
    for p in sub["patient"]:
        np.testing.assert_allclose(read_bag(out_paths[p]).features, direct[p][0], rtol=1e-5, atol=1e-5)


def test_obsm_key(small_files):
    target_path, ext_path, _ = small_files
    target, external = ad.read_h5ad(target_path), ad.read_h5ad(ext_path)
    rng = np.random.default_rng(0)
    target.obsm["X_scVI"] = rng.normal(size=(target.n_obs, 7))
    external.obsm["X_scVI"] = rng.normal(size=(external.n_obs, 7))
    out = embed_scrna(target, ScrnaEmbedParams(obsm_key="X_scVI"), external=external)
    for adata in (target, external):
        for patient in adata.obs["patient"].cat.categories:
            mask = (adata.obs["patient"] == patient).to_numpy()
            features, barcodes = out[patient]
            np.testing.assert_array_equal(features, adata.obsm["X_scVI"][mask].astype(np.float32))
            assert list(barcodes) == list(adata.obs_names[mask])
    del external.obsm["X_scVI"]
    with pytest.raises(ValueError, match="external cohort: obsm has no key 'X_scVI'"):
        embed_scrna(target, ScrnaEmbedParams(obsm_key="X_scVI"), external=external)


def test_h5ad_patients_encodings(small_files, tmp_path):
    target_path, _, sheet = small_files
    expected = list(sheet.loc[sheet["cohort"] == "target", "patient"])
    assert h5ad_patients(target_path, "patient") == expected  # categorical
    adata = ad.read_h5ad(target_path)
    adata.obs["patient"] = adata.obs["patient"].astype(str)
    plain = tmp_path / "plain.h5ad"
    adata.write_h5ad(plain, convert_strings_to_categoricals=False)  # string array
    assert h5ad_patients(plain, "patient") == expected
    legacy = tmp_path / "legacy.h5ad"  # anndata < 0.8: codes plus obs/__categories
    with h5py.File(legacy, "w") as f:
        obs = f.create_group("obs")
        obs.create_dataset("patient", data=np.array([1, 1, 0, -1], dtype=np.int8))
        obs.create_group("__categories").create_dataset("patient", data=np.array([b"B", b"A"]))
    assert h5ad_patients(legacy, "patient") == ["A", "B"]
    with pytest.raises(ValueError, match=r"target\.h5ad.*'donor'"):
        h5ad_patients(target_path, "donor")


def test_error_patient_missing_from_file(small_files, tmp_path):
    target_path, ext_path, sheet = small_files
    extra = pd.DataFrame({"patient": ["P999"], "label": ["healthy"], "cohort": ["target"]})
    sheet = pd.concat([sheet, extra], ignore_index=True)
    out_paths = {p: str(tmp_path / f"{p}.h5") for p in sheet["patient"]}
    with pytest.raises(ValueError, match=r"target\.h5ad.*P999"):
        write_scrna_bags(target_path, sheet, out_paths, SMALL_EMBED, external_h5ad=ext_path)
    with pytest.raises(ValueError, match="external_h5ad"):
        write_scrna_bags(target_path, sheet.iloc[:-1], out_paths, SMALL_EMBED)
    assert not list(tmp_path.glob("*.h5"))


def test_error_label_disagrees(small_files, tmp_path):
    target_path, _, sheet = small_files
    sheet = sheet[sheet["cohort"] == "target"].copy()
    sheet.loc[sheet["patient"] == "P001", "label"] = "disease_b"
    out_paths = {p: str(tmp_path / f"{p}.h5") for p in sheet["patient"]}
    with pytest.raises(ValueError, match="patient 'P001'.*disease_b.*healthy"):
        write_scrna_bags(target_path, sheet, out_paths, SMALL_EMBED)


def test_error_missing_keys(small_files):
    target_path, _, _ = small_files
    adata = ad.read_h5ad(target_path)
    with pytest.raises(ValueError, match="'donor'"):
        embed_scrna(adata, ScrnaEmbedParams(patient_key="donor"))
    with pytest.raises(ValueError, match="layer 'counts'"):
        embed_scrna(adata, ScrnaEmbedParams(layer="counts"))
    with pytest.raises(ValueError, match="obsm has no key 'X_pca'"):
        embed_scrna(adata, ScrnaEmbedParams(obsm_key="X_pca"))


def test_error_label_key_missing(small_files, tmp_path):
    target_path, _, sheet = small_files
    sheet = sheet[sheet["cohort"] == "target"]
    out_paths = {p: str(tmp_path / f"{p}.h5") for p in sheet["patient"]}
    with pytest.raises(ValueError, match="'diagnosis'"):
        write_scrna_bags(target_path, sheet, out_paths, ScrnaEmbedParams(label_key="diagnosis"))


def test_error_zero_cells_after_qc(small_files):
    target_path, _, _ = small_files
    adata = ad.read_h5ad(target_path)
    x = adata.X.toarray()
    dead = (adata.obs["patient"] == "P002").to_numpy()
    x[dead] = 0
    x[dead, :5] = 3  # 5 detected genes per cell, below min_genes=50
    adata.X = sp.csr_matrix(x)
    with pytest.raises(ValueError, match=r"\['P002'\] have zero cells after QC"):
        embed_scrna(adata, SMALL_EMBED)
    # a lower threshold keeps them
    out = embed_scrna(adata, ScrnaEmbedParams(min_genes=3, n_top_genes=100, n_pcs=10))
    assert out["P002"][0].shape[0] == dead.sum()


def test_sheet_path_is_the_h5ad_patient_id(small_files, tmp_path):
    # docs/method.md §9: for scrna the sheet's `path` is the patient id in the h5ad
    target_path, ext_path, sheet = small_files
    plain = {p: str(tmp_path / "plain" / f"{p}.h5") for p in sheet["patient"]}
    write_scrna_bags(target_path, sheet, plain, SMALL_EMBED, external_h5ad=ext_path)
    renamed = sheet.assign(path=sheet["patient"], patient="donor_" + sheet["patient"])
    out_paths = {p: str(tmp_path / "renamed" / f"{p}.h5") for p in renamed["patient"]}
    write_scrna_bags(target_path, renamed, out_paths, SMALL_EMBED, external_h5ad=ext_path)
    for old, new in zip(sheet["patient"], renamed["patient"], strict=True):
        bag = read_bag(out_paths[new])
        assert bag.patient == new
        np.testing.assert_array_equal(bag.features, read_bag(plain[old]).features)
    renamed.loc[0, "path"] = "P999"
    with pytest.raises(ValueError, match=r"donor_P000 \(as 'P999'\)"):
        write_scrna_bags(target_path, renamed, out_paths, SMALL_EMBED, external_h5ad=ext_path)
