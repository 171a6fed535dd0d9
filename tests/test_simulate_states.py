"""What the simulators add beyond class proportions, checked in the generated data.

For each simulator (scRNA-seq, flow, smear images): disease-only cell types, state shifts within a
shared cell type, patient-level effects, bag-size variation, the external cohort's shift and
shared classes, and the per-instance truth in the written files and in the bags.
"""

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recipe_mil.embed.flow import FlowEmbedParams, read_fcs, write_flow_bag
from recipe_mil.embed.image import ImageEmbedParams, segment_cell, write_image_bag
from recipe_mil.embed.scrna import ScrnaEmbedParams, write_scrna_bags
from recipe_mil.io.bags import BagFileError, instance_truth, read_bag, write_bag
from recipe_mil.simulate.common import (
    STATES,
    cell_states,
    draw_bag_size,
    draw_instances,
    resolve_disease_only,
    resolve_state_shift,
)
from recipe_mil.simulate.flow import (
    FLOW_PANEL,
    MARKERS,
    FlowSimParams,
    event_populations,
    event_states,
    event_truth,
    external_flow_params,
    read_flow_truth,
    simulate_flow_cohort,
    spillover_matrix,
)
from recipe_mil.simulate.image import (
    TRUTH_JSON,
    ImageSimParams,
    crop_truth,
    external_image_params,
    read_image_truth,
    simulate_image_cohort,
    simulate_patient_images,
)
from recipe_mil.simulate.scrna import (
    TRUTH_KEY,
    ScrnaSimParams,
    cohort_design,
    external_params,
    simulate_scrna_cohort,
    write_h5ad_atomic,
)

# ----------------------------------------------------------------------------------------- shared pieces


def test_bag_size_is_clipped_normal():
    rng = np.random.default_rng(0)
    sizes = np.array([draw_bag_size(rng, 300, 60, 100, 450) for _ in range(4000)])
    assert sizes.min() >= 100 and sizes.max() <= 450
    assert sizes.mean() == pytest.approx(300, abs=4) and sizes.std() == pytest.approx(60, rel=0.06)


def test_cell_states_means_and_instances():
    base = {"h": np.array([0.5, 0.5]), "d": np.array([0.2, 0.8])}
    states = cell_states(["a", "b"], base, {"d": 0.25}, {"d": {"a": 0.5}})
    assert states.cell_types == ("a", "b", "d_only") and states.n_shared == 2
    np.testing.assert_allclose(states.means["d"], [0.15, 0.6, 0.25])
    np.testing.assert_allclose(states.means["h"], [0.5, 0.5, 0.0])
    rng = np.random.default_rng(1)
    props, types, codes = draw_instances(rng, states, "d", 20000, 1e6)
    np.testing.assert_allclose(props, [0.15, 0.6, 0.25], atol=0.01)
    assert set(codes[types == 2]) == {2} and set(codes[types == 1]) == {0}
    assert (codes[types == 0] == 1).mean() == pytest.approx(0.5, abs=0.03)
    _, types_h, codes_h = draw_instances(rng, states, "h", 2000, 50.0)
    assert 2 not in types_h and set(codes_h) == {0}
    with pytest.raises(ValueError, match=r"disease_only names class\(es\) \['x'\]"):
        resolve_disease_only("P", ["h", "d"], {"x": 0.1}, {})
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        resolve_disease_only("P", ["h", "d"], {"d": 1.5}, {})
    with pytest.raises(ValueError, match=r"names cell type\(s\) \['zz'\]"):
        resolve_state_shift("P", ["h", "d"], ["a", "b"], {"d": {"zz": 0.1}}, {})
    # None: the built-in defaults of the classes present; {}: none
    assert resolve_disease_only("P", ["h"], None, {"d": 0.1}) == {}
    assert resolve_disease_only("P", ["h", "d"], {}, {"d": 0.1}) == {}


def test_bag_truth_roundtrip_and_errors(tmp_path):
    x = np.zeros((3, 2))
    write_bag(
        tmp_path / "b.h5",
        x,
        ["i0", "i1", "i2"],
        patient="p",
        label="l",
        encoder="e",
        truth={"cell_type": ["a", "b", "a"], "state": STATES},
    )
    bag = read_bag(tmp_path / "b.h5")
    assert list(bag.truth["cell_type"]) == ["a", "b", "a"] and list(bag.truth["state"]) == list(STATES)
    write_bag(tmp_path / "real.h5", x, ["i0", "i1", "i2"], patient="p", label="l", encoder="e")
    assert read_bag(tmp_path / "real.h5").truth == {}  # real data: no truth
    with pytest.raises(BagFileError, match="truth lengths"):
        write_bag(tmp_path / "c.h5", x, ["i0", "i1", "i2"], patient="p", label="l", encoder="e", truth={"s": ["a"]})
    table = pd.DataFrame({"cell_type": ["a", "b"]}, index=["i0", "i1"])
    assert list(instance_truth(table, ["i1", "i0"])["cell_type"]) == ["b", "a"]
    assert instance_truth(None, ["i0"]) is None
    with pytest.raises(BagFileError, match=r"my.tsv: no truth for 1 instance\(s\), e.g. \['i9'\]"):
        instance_truth(table, ["i0", "i9"], source="my.tsv")


# ----------------------------------------------------------------------------------------- scRNA-seq

SCRNA_OFF = dict(disease_only={}, state_shift={}, patient_effect_sd=0.0)


def _normalised(adata: ad.AnnData, mask: np.ndarray) -> np.ndarray:
    """Mean library-normalised expression per gene of the cells in ``mask``."""
    x = adata.X[mask]
    x = sp.diags(1.0 / np.asarray(x.sum(axis=1)).ravel()) @ x
    return np.asarray(x.mean(axis=0)).ravel()


@pytest.fixture(scope="module")
def scrna_states() -> ad.AnnData:
    params = ScrnaSimParams(
        n_patients_per_class=8,
        n_genes=300,
        n_markers_per_type=15,
        cells_per_patient_mean=400,
        cells_per_patient_sd=50,
        concentration=200.0,
        disease_only={"disease_b": 0.12},
        state_shift={"disease_a": {"type_0": 0.5}},
        state_shift_magnitude=1.2,
        patient_effect_sd=0.0,
    )
    return simulate_scrna_cohort(params)


def test_scrna_disease_only_cells_only_in_their_class(scrna_states):
    obs = scrna_states.obs
    only = (obs["cell_type"] == "disease_b_only").to_numpy()
    assert set(obs.loc[only, "label"]) == {"disease_b"}
    assert ((obs["state"] == "disease_only").to_numpy() == only).all()
    per_patient = pd.Series(only).groupby(obs["patient"].to_numpy()).mean()
    labels = obs.groupby("patient", observed=True)["label"].first()
    rates = per_patient[labels[labels == "disease_b"].index]
    assert len(rates) == 8 and (rates > 0.03).all()  # every patient of the class has them
    assert rates.mean() == pytest.approx(0.12, abs=0.02)  # at the configured rate
    assert (per_patient[labels[labels != "disease_b"].index] == 0).all()
    # their own program: their marker genes are up against every shared type
    truth = scrna_states.uns[TRUTH_KEY]
    genes = scrna_states.var_names.get_indexer(truth["marker_genes"]["disease_b_only"])
    expr_only, expr_shared = _normalised(scrna_states, only), _normalised(scrna_states, ~only)
    assert np.log(expr_only[genes] / expr_shared[genes]).mean() > 1.0
    assert truth["disease_only"] == {"disease_b": 0.12} and truth["disease_only_types"] == {
        "disease_b": "disease_b_only"
    }


def test_scrna_state_shift_moves_part_of_a_shared_type(scrna_states):
    obs = scrna_states.obs
    type0 = (obs["cell_type"] == "type_0").to_numpy()
    shifted = (obs["state"] == "shifted").to_numpy()
    assert set(obs.loc[shifted, "label"]) == {"disease_a"} and set(obs.loc[shifted, "cell_type"]) == {"type_0"}
    in_class = type0 & (obs["label"] == "disease_a").to_numpy()
    assert shifted[in_class].mean() == pytest.approx(0.5, abs=0.08)  # ~700 cells: se 0.02
    # the shifted sub-state's state genes exceed the baseline's by the configured log fold (1.2),
    # relative to the other genes (the profile is renormalised)
    truth = scrna_states.uns[TRUTH_KEY]
    genes = scrna_states.var_names.get_indexer(truth["state_genes"]["type_0"])
    ratio = np.log(_normalised(scrna_states, in_class & shifted) / _normalised(scrna_states, in_class & ~shifted))
    rest = np.setdiff1d(np.arange(scrna_states.n_vars), genes)
    measured = np.median(ratio[genes]) - np.median(ratio[rest])
    print(f"scRNA state shift: measured log fold {measured:.3f} (configured 1.2)")
    assert measured == pytest.approx(1.2, abs=0.1)


def _patient_offsets(adata: ad.AnnData, cell_type: str, genes: np.ndarray) -> pd.DataFrame:
    """Per patient, the log ratio of a cell type's mean expression to the cohort's, on ``genes``."""
    mask = (adata.obs["cell_type"] == cell_type).to_numpy()
    patients = adata.obs["patient"].cat.categories
    cohort = _normalised(adata, mask)[genes]
    rows = {
        p: np.log(_normalised(adata, mask & (adata.obs["patient"] == p).to_numpy())[genes] / cohort) for p in patients
    }
    return pd.DataFrame(rows).T


def test_scrna_patient_effects_have_the_configured_sd():
    common = dict(
        n_patients_per_class=10,
        n_genes=200,
        n_markers_per_type=10,
        cells_per_patient_mean=300,
        cells_per_patient_sd=20,
        disease_only={},
        state_shift={},
    )
    with_effect = simulate_scrna_cohort(ScrnaSimParams(**common, patient_effect_sd=0.3))
    without = simulate_scrna_cohort(ScrnaSimParams(**common, patient_effect_sd=0.0))
    genes = np.argsort(_normalised(without, np.ones(without.n_obs, bool)))[-40:]  # well-measured genes
    measured = _patient_offsets(with_effect, "type_0", genes)
    noise = _patient_offsets(without, "type_0", genes)
    sd, noise_sd = measured.std(axis=0).mean(), noise.std(axis=0).mean()
    print(f"scRNA patient effect: measured sd {sd:.3f} (configured 0.3), sampling noise {noise_sd:.3f}")
    assert np.sqrt(sd**2 - noise_sd**2) == pytest.approx(0.3, abs=0.04)
    assert noise_sd < 0.1
    truth = with_effect.uns[TRUTH_KEY]["patient_effects"]
    effects = pd.DataFrame({p: np.asarray(v)[genes] for p, v in truth.items()}).T.loc[measured.index]
    centred = effects - effects.mean(axis=0)
    assert np.corrcoef(centred.to_numpy().ravel(), measured.to_numpy().ravel())[0, 1] > 0.9


def test_scrna_bag_sizes_vary_as_configured():
    params = ScrnaSimParams(
        n_patients_per_class=30,
        n_genes=30,
        n_markers_per_type=3,
        cells_per_patient_mean=300,
        cells_per_patient_sd=60,
        min_cells_per_patient=80,
        **SCRNA_OFF,
    )
    sizes = pd.Series(simulate_scrna_cohort(params).uns[TRUTH_KEY]["patient_n_cells"])
    assert sizes.min() >= 80
    assert sizes.mean() == pytest.approx(300, abs=25) and sizes.std() == pytest.approx(60, rel=0.25)


def test_scrna_external_shift_and_shared_classes(scrna_states):
    target = ScrnaSimParams(
        n_patients_per_class=2,
        n_genes=300,
        n_markers_per_type=15,
        cells_per_patient_mean=300,
        disease_only={"disease_b": 0.12},
        state_shift={"disease_a": {"type_0": 0.5}},
    )
    ext_params = external_params(target, classes=("healthy", "disease_a", "disease_b"), n_patients_per_class=2)
    ext = simulate_scrna_cohort(ext_params)
    assert set(ext.obs["label"]) == {"healthy", "disease_a", "disease_b"}  # every class shared with the target
    assert set(ext.obs.loc[ext.obs["cell_type"] == "disease_b_only", "label"]) == {"disease_b"}
    assert set(ext.obs.loc[ext.obs["state"] == "shifted", "label"]) == {"disease_a"}
    truth, t_truth = ext.uns[TRUTH_KEY], scrna_states.uns[TRUTH_KEY]
    assert truth["marker_genes"] == t_truth["marker_genes"] and truth["state_genes"] == t_truth["state_genes"]
    # its own batch: the per-gene log ratio to the target's type_0 spreads by about batch_shift (0.5)
    ratio = np.log(
        _normalised(ext, (ext.obs["cell_type"] == "type_0").to_numpy())
        / _normalised(scrna_states, (scrna_states.obs["cell_type"] == "type_0").to_numpy())
    )
    assert ratio.std() > 0.35
    # an external cohort of healthy patients only has no disease-only type and no shift
    healthy = simulate_scrna_cohort(external_params(target, classes=("healthy",), n_patients_per_class=1))
    assert healthy.uns[TRUTH_KEY]["disease_only"] == {} and set(healthy.obs["state"]) == {"baseline"}


def test_scrna_truth_in_files_and_bags(tmp_path):
    params = ScrnaSimParams(
        n_patients_per_class=2,
        n_genes=150,
        n_markers_per_type=10,
        cells_per_patient_mean=120,
        cells_per_patient_sd=20,
        disease_only={"disease_b": 0.2},
    )
    ext_params = external_params(params, classes=("disease_b",), n_patients_per_class=1)
    write_h5ad_atomic(simulate_scrna_cohort(params), tmp_path / "t.h5ad")
    write_h5ad_atomic(simulate_scrna_cohort(ext_params), tmp_path / "e.h5ad")
    target, ext = ad.read_h5ad(tmp_path / "t.h5ad"), ad.read_h5ad(tmp_path / "e.h5ad")
    assert {"cell_type", "state"} <= set(target.obs.columns)
    assert "patient_effects" in target.uns[TRUTH_KEY]
    sheet = pd.concat([cohort_design(params), cohort_design(ext_params)], ignore_index=True)
    out = {p: str(tmp_path / f"{p}.h5") for p in sheet["patient"]}
    write_scrna_bags(
        tmp_path / "t.h5ad",
        sheet,
        out,
        ScrnaEmbedParams(n_top_genes=80, n_pcs=8, min_genes=10),
        external_h5ad=tmp_path / "e.h5ad",
        truth_columns=("cell_type", "state"),
    )
    obs = pd.concat([target.obs, ext.obs])
    for path in out.values():
        bag = read_bag(path)
        np.testing.assert_array_equal(bag.truth["cell_type"], obs.loc[bag.instance_ids, "cell_type"].astype(str))
        np.testing.assert_array_equal(bag.truth["state"], obs.loc[bag.instance_ids, "state"].astype(str))
    assert "disease_b_only" in set(read_bag(out["E000"]).truth["cell_type"])
    # real data: no truth columns asked, none written
    write_scrna_bags(
        tmp_path / "t.h5ad",
        sheet.iloc[:1],
        {"P000": str(tmp_path / "real.h5")},
        ScrnaEmbedParams(n_top_genes=80, n_pcs=8, min_genes=10),
    )
    assert read_bag(tmp_path / "real.h5").truth == {}


# ----------------------------------------------------------------------------------------- flow

FLOW_STATES = FlowSimParams(
    n_patients_per_class=5,
    events_mean=3000,
    events_sd=300,
    concentration=300.0,
    disease_only={"aml": 0.15},
    state_shift={"low_blast": {"granulocytes": 0.5}},
    state_shift_magnitude=0.3,
    patient_effect_sd=0.0,
)


@pytest.fixture(scope="module")
def flow_states(tmp_path_factory):
    root = tmp_path_factory.mktemp("flowstates")
    return root, simulate_flow_cohort(FLOW_STATES, root)


def _compensated_log10(path, instrument: str = "bd") -> np.ndarray:
    """log10 of the compensated marker intensities (MARKERS order) and scatter of one simulated file."""
    header, events = read_fcs(path)
    detectors, spill = spillover_matrix(instrument)
    cols = [header.pnn.index(d) for d in detectors]
    comp = events[:, cols] @ np.linalg.inv(spill)
    out = np.empty((events.shape[0], 2 + len(MARKERS)))
    out[:, :2] = events[:, :2]
    order = ["CD3", "CD33", "CD56", "CD34", "CD117", "CD13", "CD19", "HLA-DR", "CD45", "CD14"]
    for j, m in enumerate(order):
        out[:, 2 + MARKERS.index(m)] = comp[:, j]
    return np.log10(np.clip(out, 1.0, None))


def test_flow_disease_only_population_only_in_its_class(flow_states):
    root, sheet = flow_states
    truth = read_flow_truth(root)
    assert truth["populations"][-1] == "aml_only" and truth["event_labels"][-1] == "debris"
    rates = []
    for row in sheet.itertuples():
        pops, states = event_populations(root, row.patient), event_states(root, row.patient)
        only = pops == "aml_only"
        assert ((states == "disease_only") == only).all()
        cells = pops != "debris"
        if row.label == "aml":
            rates.append(only[cells].mean())
        else:
            assert not only.any()
    # every aml patient has them, at about the configured rate (Beta(45, 255): sd 0.02 per patient)
    assert len(rates) == 5 and min(rates) > 0.08 and np.mean(rates) == pytest.approx(0.15, abs=0.03)
    # an aberrant phenotype: CD56 and CD19 on, unlike the shared blasts
    aml = sheet[sheet["label"] == "aml"].iloc[0]
    x, pops = _compensated_log10(aml["path"]), event_populations(root, aml["patient"])
    for marker in ("CD56", "CD19"):
        j = 2 + MARKERS.index(marker)
        assert np.median(x[pops == "aml_only", j]) - np.median(x[pops == "blasts", j]) > 0.8


def test_flow_state_shift_moves_part_of_a_population(flow_states):
    root, sheet = flow_states
    ssc, cd13 = 1, 2 + MARKERS.index("CD13")
    diffs = []
    for row in sheet.itertuples():
        pops, states = event_populations(root, row.patient), event_states(root, row.patient)
        gran = pops == "granulocytes"
        shifted = states == "shifted"
        if row.label != "low_blast":
            assert not shifted.any()
            continue
        assert set(pops[shifted]) == {"granulocytes"}
        assert shifted[gran].mean() == pytest.approx(0.5, abs=0.05)
        x = _compensated_log10(row.path)
        diffs.append([np.median(x[gran & shifted, c]) - np.median(x[gran & ~shifted, c]) for c in (ssc, cd13)])
    measured = np.mean(diffs, axis=0)
    print(f"flow state shift: measured log10 SSC {measured[0]:.3f}, CD13 {measured[1]:.3f} (configured -0.3)")
    np.testing.assert_allclose(measured, [-0.3, -0.3], atol=0.03)


def test_flow_patient_effects_have_the_configured_sd(tmp_path):
    params = FlowSimParams(
        classes=("healthy",),
        n_patients_per_class=30,
        events_mean=1500,
        events_sd=0,
        patient_effect_sd=0.1,
        disease_only={},
        state_shift={},
    )
    sheet = simulate_flow_cohort(params, tmp_path)
    truth = read_flow_truth(tmp_path)
    ssc, cd3 = 1, 2 + MARKERS.index("CD3")
    medians = []
    for row in sheet.itertuples():
        x, pops = _compensated_log10(row.path), event_populations(tmp_path, row.patient)
        medians.append([np.median(x[pops == "granulocytes", ssc]), np.median(x[pops == "t_cells", cd3])])
    measured = np.asarray(medians).std(axis=0, ddof=1)
    gains = np.array([truth["patient_effects"][p] for p in sheet["patient"]])[:, [ssc, cd3]]
    drawn = gains.std(axis=0, ddof=1)
    print(f"flow patient effect: measured sd SSC {measured[0]:.3f}, CD3 {measured[1]:.3f}; drawn {drawn} (0.1)")
    np.testing.assert_allclose(measured, drawn, atol=0.015)  # the data show the drawn gains
    np.testing.assert_allclose(drawn, 0.1, atol=0.035)  # 30 draws of sd 0.1: se of the sd 0.013
    assert np.corrcoef(gains[:, 0], np.asarray(medians)[:, 0])[0, 1] > 0.95


def test_flow_bag_sizes_vary_as_configured(tmp_path):
    params = FlowSimParams(
        classes=("healthy",), n_patients_per_class=40, events_mean=800, events_sd=150, min_events=500
    )
    simulate_flow_cohort(params, tmp_path)
    sizes = pd.Series(read_flow_truth(tmp_path)["patient_n_events"])
    assert sizes.min() >= 500 and sizes.std() == pytest.approx(150 * 0.85, rel=0.3)  # sd shrunk by the clip at 500
    assert sizes.nunique() > 30


def test_flow_external_shift_and_shared_classes(flow_states, tmp_path):
    root, _ = flow_states
    ext_params = external_flow_params(
        FLOW_STATES, classes=("healthy", "aml", "low_blast"), n_patients_per_class=1, intensity_shift_sd=0.2
    )
    ext = simulate_flow_cohort(ext_params, tmp_path)
    truth = read_flow_truth(tmp_path)
    assert list(ext["label"]) == ["healthy", "aml", "low_blast"] and truth["instrument"] == "beckman"
    assert np.std(np.log10(truth["intensity_shift"])) > 0.1  # the instrument's own gains
    aml, low = ext.iloc[1]["patient"], ext.iloc[2]["patient"]
    assert (event_populations(tmp_path, aml) == "aml_only").mean() > 0.05
    assert (event_states(tmp_path, low) == "shifted").any()
    # the shift shows in the data: the same population's medians differ from the target's
    t_row = read_flow_truth(root)
    x_ext = _compensated_log10(ext.iloc[0]["path"], "beckman")
    x_tgt = _compensated_log10(root / "F000.fcs")
    p_ext, p_tgt = event_populations(tmp_path, ext.iloc[0]["patient"]), event_populations(root, "F000")
    g = [np.median(x_ext[p_ext == "granulocytes", c]) - np.median(x_tgt[p_tgt == "granulocytes", c]) for c in range(2)]
    np.testing.assert_allclose(
        g, np.log10(truth["intensity_shift"][:2]) - np.log10(t_row["intensity_shift"][:2]), atol=0.03
    )


def test_flow_truth_survives_embedding(flow_states, tmp_path):
    root, sheet = flow_states
    row = sheet[sheet["label"] == "aml"].iloc[0]
    truth = event_truth(root, row["patient"])
    assert list(truth.columns) == ["cell_type", "state"]
    params = FlowEmbedParams(panel=FLOW_PANEL, max_events=500)
    write_flow_bag(
        row["path"],
        tmp_path / "b.h5",
        patient=row["patient"],
        label="aml",
        params=params,
        features=[m["marker"] for m in FLOW_PANEL],
        truth=truth,
    )
    bag = read_bag(tmp_path / "b.h5")
    ids = bag.instance_ids.astype(int)
    np.testing.assert_array_equal(bag.truth["cell_type"], event_populations(root, row["patient"])[ids])
    np.testing.assert_array_equal(bag.truth["state"], event_states(root, row["patient"])[ids])
    assert "aml_only" in set(bag.truth["cell_type"])
    assert event_truth(root, row["patient"]).shape[0] == read_fcs(row["path"])[1].shape[0]


# ----------------------------------------------------------------------------------------- images

IMAGE_BASE = dict(
    image_size=64, rbc_mean=0.0, noise_sd=0.5, stain_jitter=0.0, size_jitter=0.02, disease_only={}, state_shift={}
)

# healthy patients whose crops are almost all lymphocytes
LYMPHOCYTES = dict(
    IMAGE_BASE,
    classes=("healthy",),
    class_proportions={"healthy": [0.01, 0.96, 0.01, 0.01, 0.01]},
    concentration=1000.0,
    crops_per_patient_sd=0,
)


def _log_areas(images) -> np.ndarray:
    return np.log([segment_cell(img)[0].sum() for img in images])


def test_image_disease_only_cells_only_in_their_class(tmp_path):
    params = ImageSimParams(
        classes=("healthy", "aml"),
        n_patients_per_class=4,
        crops_per_patient_mean=30,
        crops_per_patient_sd=0,
        concentration=300.0,
        **{**IMAGE_BASE, "disease_only": {"aml": 0.2}},
    )
    simulate_image_cohort(params, tmp_path)
    truth = read_image_truth(tmp_path)
    only = truth["cell_type"] == "aml_only"
    assert set(truth.loc[only, "label"]) == {"aml"} and ((truth["state"] == "disease_only") == only).all()
    rates = only.groupby(truth["patient"]).mean()
    labels = truth.groupby("patient")["label"].first()
    assert (rates[labels == "healthy"] == 0).all()
    assert (rates[labels == "aml"] > 0.05).all() and rates[labels == "aml"].mean() == pytest.approx(0.2, abs=0.07)
    meta = json.loads((tmp_path / TRUTH_JSON).read_text())
    assert meta["disease_only_morphology"] == {"aml": "abnormal_promyelocyte"}
    # the abnormal promyelocytes are larger than every shared cell type but the monocytes
    crops = simulate_patient_images(params, "P004", "aml")
    areas = pd.Series(_log_areas(crops.images)).groupby(crops.cell_types).mean()
    assert areas["aml_only"] > areas.drop(["aml_only", "monocyte"], errors="ignore").max()


def test_image_state_shift_changes_part_of_a_type():
    params = ImageSimParams(
        n_patients_per_class=1,
        crops_per_patient_mean=60,
        max_crops_per_patient=60,
        patient_size_sd=0.0,
        **{**LYMPHOCYTES, "state_shift": {"healthy": {"lymphocyte": 0.5}}},
        state_shift_magnitude=0.3,
    )
    crops = simulate_patient_images(params, "P000", "healthy")
    states, types = np.array(crops.states), np.array(crops.cell_types)
    lymph = types == "lymphocyte"
    assert set(states[~lymph]) <= {"baseline"} and (states[lymph] == "shifted").mean() == pytest.approx(0.5, abs=0.15)
    area = _log_areas(crops.images)
    measured = area[lymph & (states == "shifted")].mean() - area[lymph & (states == "baseline")].mean()
    print(f"image state shift: measured log area {measured:.3f} (configured size 0.3 -> 0.6)")
    assert measured == pytest.approx(2 * 0.3, abs=0.1)  # reactive lymphocytes: radius x e^0.3


def test_image_patient_effects_have_the_configured_sd():
    params = ImageSimParams(
        n_patients_per_class=24,
        crops_per_patient_mean=6,
        min_crops_per_patient=6,
        patient_size_sd=0.12,
        patient_stain_sd=0.1,
        **LYMPHOCYTES,
    )
    sizes, truth = [], []
    for i in range(24):
        crops = simulate_patient_images(params, f"P{i:03d}", "healthy")
        lymph = np.array(crops.cell_types) == "lymphocyte"
        sizes.append(_log_areas([im for im, keep in zip(crops.images, lymph, strict=True) if keep]).mean() / 2)
        truth.append(crops.effect["log_size"])
    measured = np.std(sizes, ddof=1)
    print(f"image patient size effect: measured sd {measured:.3f} (configured 0.12)")
    assert measured == pytest.approx(0.12, abs=0.04)
    assert np.corrcoef(sizes, truth)[0, 1] > 0.95
    gains = np.array([simulate_patient_images(params, f"P{i:03d}", "healthy").effect["stain_gain"] for i in range(3)])
    assert gains.shape == (3, 3) and gains.std() > 0  # stain effects per patient, recorded in the truth


def test_image_bag_sizes_vary_as_configured(tmp_path):
    params = ImageSimParams(
        classes=("healthy",),
        n_patients_per_class=30,
        crops_per_patient_mean=10,
        crops_per_patient_sd=3,
        min_crops_per_patient=2,
        max_crops_per_patient=30,
        **{**IMAGE_BASE, "image_size": 48},
    )
    simulate_image_cohort(params, tmp_path)
    sizes = pd.Series(json.loads((tmp_path / TRUTH_JSON).read_text())["patient_n_crops"])
    assert sizes.std() == pytest.approx(3, rel=0.35) and sizes.mean() == pytest.approx(10, abs=1.5)


def test_image_external_shift_and_shared_classes(tmp_path):
    target = ImageSimParams(
        classes=("healthy", "aml"),
        n_patients_per_class=1,
        crops_per_patient_mean=6,
        crops_per_patient_sd=0,
        min_crops_per_patient=6,
        **{**IMAGE_BASE, "disease_only": {"aml": 0.5}},
    )
    ext_params = external_image_params(target, classes=("healthy", "aml"), n_patients_per_class=1)
    ext = simulate_image_cohort(ext_params, tmp_path / "ext")
    tgt = simulate_image_cohort(target, tmp_path / "tgt")
    assert list(ext["label"]) == ["healthy", "aml"]
    assert "aml_only" in set(read_image_truth(tmp_path / "ext")["cell_type"])
    # the stain shift: a yellower slide background (less blue) in every external crop
    corner = lambda folder: np.mean([np.asarray(read_img)[:6, :6, 2] for read_img in _images(folder)])  # noqa: E731
    assert corner(tmp_path / "ext" / "E000") < corner(tmp_path / "tgt" / "P000") - 10
    assert json.loads((tmp_path / "ext" / TRUTH_JSON).read_text())["stain_shift"] == 1.0
    assert list(tgt["cohort"]) == ["target", "target"]


def _images(folder):
    from PIL import Image

    return [Image.open(p) for p in sorted(folder.iterdir())]


def test_image_truth_survives_embedding(tmp_path):
    params = ImageSimParams(
        classes=("healthy", "aml"),
        n_patients_per_class=1,
        crops_per_patient_mean=8,
        crops_per_patient_sd=0,
        min_crops_per_patient=8,
        **{**IMAGE_BASE, "disease_only": {"aml": 0.4}, "state_shift": {"aml": {"neutrophil": 0.5}}},
    )
    sheet = simulate_image_cohort(params, tmp_path / "raw")
    row = sheet.iloc[1]
    truth = crop_truth(tmp_path / "raw", row["patient"])
    write_image_bag(
        row["path"],
        tmp_path / "b.h5",
        patient=row["patient"],
        label="aml",
        params=ImageEmbedParams(encoder="morphology"),
        truth=truth,
    )
    bag = read_bag(tmp_path / "b.h5")
    table = read_image_truth(tmp_path / "raw").set_index("instance_id")
    np.testing.assert_array_equal(bag.truth["cell_type"], table.loc[bag.instance_ids, "cell_type"])
    np.testing.assert_array_equal(bag.truth["state"], table.loc[bag.instance_ids, "state"])
    assert "aml_only" in set(bag.truth["cell_type"])
    with pytest.raises(FileNotFoundError, match="no simulator truth"):
        crop_truth(tmp_path / "elsewhere", "P000")
    with pytest.raises(FileNotFoundError, match="no simulator truth"):
        event_truth(tmp_path / "elsewhere", "F000")


@pytest.mark.parametrize("kind", [ScrnaSimParams, FlowSimParams, ImageSimParams])
def test_simulator_parameters_are_checked_in_one_place(kind):
    """simulate.common.check_params: classes as strings, none empty or repeated, every bad value named."""
    assert kind(classes=["a", 1]).classes == ("a", "1")
    with pytest.raises(ValueError, match=rf"^{kind.__name__}: classes must not be empty$"):
        kind(classes=())
    with pytest.raises(ValueError, match=rf"^{kind.__name__}: duplicate class names in \('a', 'a'\)$"):
        kind(classes=("a", "a"))
    with pytest.raises(
        ValueError,
        match=rf"^{kind.__name__}: invalid value\(s\): n_patients_per_class=0, state_shift_magnitude=-1\.0$",
    ):
        kind(classes=("a", "b"), n_patients_per_class=0, state_shift_magnitude=-1.0)


def test_embedding_parameters_name_every_invalid_value():
    with pytest.raises(ValueError, match=r"^ImageEmbedParams: invalid value\(s\): batch_size=0, log_every=0$"):
        ImageEmbedParams(batch_size=0, log_every=0)
    with pytest.raises(ValueError, match=r"^FlowEmbedParams: invalid value\(s\): cofactor=0\.0$"):
        FlowEmbedParams(cofactor=0.0)
