import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

from recipe_mil.io.synthetic import read_recipes, read_synthetic, write_recipes, write_synthetic
from recipe_mil.recipes import (
    BagSizeModel,
    build_pool,
    fit_dirichlet,
    fit_dirichlet_multinomial,
    generate_synthetic,
    patient_proportions,
)
from recipe_mil.recipes.pipeline import RecipeConfig, fit_fold_recipes
from recipe_mil.simulate.bags import DEFAULT_PROPORTIONS, simulate_bag_cohort
from recipe_mil.splits import make_splits, scenario_patients

TRUE_PROPS = DEFAULT_PROPORTIONS


def _blob_cohort(tmp_path, n_per_class=10):
    """Cell types are well-separated Gaussian blobs; classes differ by Dirichlet proportions."""
    sheet, types = simulate_bag_cohort(tmp_path, n_per_class=n_per_class, seed=0)
    return sheet, dict(zip(sheet["patient"], sheet["path"], strict=True)), types


def test_dirichlet_mle_recovers_alpha():
    rng = np.random.default_rng(0)
    alpha = np.array([8.0, 4.0, 2.0, 1.0])
    alpha_hat, method = fit_dirichlet(rng.dirichlet(alpha, size=2000))
    assert method == "mle"
    np.testing.assert_allclose(alpha_hat, alpha, rtol=0.08)
    # one patient: moment matching fallback, still the right mean
    alpha1, method1 = fit_dirichlet(np.array([[0.5, 0.3, 0.2]]))
    assert method1 == "moments"
    np.testing.assert_allclose(alpha1 / alpha1.sum(), [0.5, 0.3, 0.2], atol=1e-6)


def test_patient_proportions_hard_and_soft():
    clusters = np.array([0, 0, 1, 2, 2, 2])
    codes = np.array([0, 0, 0, 1, 1, 1])
    p = patient_proportions(clusters, codes, 2, 3)
    np.testing.assert_allclose(p, [[2 / 3, 1 / 3, 0], [0, 0, 1]])
    resp = np.eye(3)[clusters]
    np.testing.assert_allclose(patient_proportions(resp, codes, 2, 3), p)


def test_bag_size_model_within_observed_range():
    model = BagSizeModel.fit([100, 150, 200, 300])
    sizes = model.sample(np.random.default_rng(0), 5000)
    assert sizes.min() >= 100 and sizes.max() <= 300
    assert abs(np.log(sizes).mean() - np.log([100, 150, 200, 300]).mean()) < 0.05


def test_recipes_recover_ground_truth_class_proportions(tmp_path):
    sheet, paths, truth_types = _blob_cohort(tmp_path)
    patients = sheet.assign(role="train")
    config = RecipeConfig(n_components=[3, 5, 7], n_pcs=None, subsample=None, n_init=3)
    fold = fit_fold_recipes(patients, paths, config, seed=0)
    pool, recipes, gmm = fold.pool, fold.recipes, fold.gmm
    assert gmm.n_components == 5  # BIC picks the true number of cell types
    # match clusters to cell types by the confusion matrix
    types = np.concatenate([truth_types[p] for p in patients["patient"]])
    conf = pd.crosstab(pool.obs["cluster"].to_numpy(), types).to_numpy()
    rows, cols = linear_sum_assignment(-conf)
    assert conf[rows, cols].sum() / conf.sum() > 0.99
    cluster_of_type = dict(zip(cols, rows, strict=True))
    for cls, truth in TRUE_PROPS.items():
        learned = np.asarray(recipes[cls].mean_proportions)[[cluster_of_type[t] for t in range(5)]]
        np.testing.assert_allclose(learned, truth, atol=0.05)
        assert recipes[cls].dirichlet_fit == "shrunk"
        assert sorted(recipes[cls].patients) == sorted(sheet.loc[sheet["label"] == cls, "patient"])
    # recipes.json round trip
    write_recipes(tmp_path / "recipes.json", recipes, n_clusters=5)
    back, meta = read_recipes(tmp_path / "recipes.json")
    assert meta["n_clusters"] == 5
    np.testing.assert_allclose(back["disease"].alpha, recipes["disease"].alpha)


def test_generated_bags_follow_recipe_and_source(tmp_path):
    sheet, paths, _ = _blob_cohort(tmp_path)
    fold = fit_fold_recipes(sheet.assign(role="train"), paths, RecipeConfig(n_components=5, n_pcs=None), seed=0)
    pool, recipes = fold.pool, fold.recipes
    clusters = pool.obs["cluster"].to_numpy()
    labels = pool.obs["label"].astype(str).to_numpy()
    cohorts = pool.obs["cohort"].astype(str).to_numpy()
    syn = generate_synthetic(recipes, clusters, labels, cohorts, n_per_class=300, instance_source="class", seed=3)
    assert len(syn) == 600
    for cls, recipe in recipes.items():
        bags = [b for b, lab in zip(syn.bags(), syn.label, strict=True) if lab == cls]
        # instance_source=class: every instance comes from a patient of that class
        assert all((labels[b] == cls).all() for b in bags)
        # realised cluster proportions follow the recipe's mean
        realised = np.mean([np.bincount(clusters[b], minlength=5) / len(b) for b in bags], axis=0)
        np.testing.assert_allclose(realised, recipe.mean_proportions, atol=0.02)
        sizes = np.array([len(b) for b in bags])
        assert sizes.min() >= recipe.bag_size.min_size and sizes.max() <= recipe.bag_size.max_size
    # pool source mixes classes; seeded; file round trip
    syn_pool = generate_synthetic(recipes, clusters, labels, cohorts, n_per_class=20, instance_source="pool", seed=3)
    assert any(len(set(labels[b])) > 1 for b in syn_pool.bags())
    again = generate_synthetic(recipes, clusters, labels, cohorts, n_per_class=20, instance_source="pool", seed=3)
    np.testing.assert_array_equal(syn_pool.indices, again.indices)
    syn_pool.scores["bald"] = np.arange(len(syn_pool), dtype=float)
    write_synthetic(tmp_path / "synthetic.h5", syn_pool)
    back = read_synthetic(tmp_path / "synthetic.h5")
    np.testing.assert_array_equal(back.indptr, syn_pool.indptr)
    np.testing.assert_array_equal(back.indices, syn_pool.indices)
    assert list(back.label) == list(syn_pool.label)
    np.testing.assert_array_equal(back.scores["bald"], syn_pool.scores["bald"])
    with pytest.raises(ValueError, match="unknown instance_source"):
        generate_synthetic(recipes, clusters, labels, cohorts, n_per_class=1, instance_source="nope")


def test_leakage_rule_no_val_or_test_instance_in_pool_or_synthetic(tmp_path):
    sheet, paths, _ = _blob_cohort(tmp_path, n_per_class=9)
    splits = make_splits(sheet, n_folds=3, n_repeats=1, val_fraction=0.25, seed=0)
    for fold in range(3):
        for scenario in ("full", "low_data-n2-d0"):
            patients = scenario_patients(splits, repeat=0, fold=fold, scenario=scenario, seed=0)
            held_out = set(patients.loc[patients["role"].isin(["val", "test"]), "patient"])
            train = set(patients.loc[patients["role"] == "train", "patient"])
            fit = fit_fold_recipes(patients, paths, RecipeConfig(n_components=5, n_pcs=None), seed=0)
            pool, recipes = fit.pool, fit.recipes
            pooled = set(pool.obs["patient"].astype(str))
            assert pooled == train and not pooled & held_out
            assert not {p for r in recipes.values() for p in r.patients} & held_out
            syn = generate_synthetic(
                recipes,
                pool.obs["cluster"].to_numpy(),
                pool.obs["label"].astype(str).to_numpy(),
                pool.obs["cohort"].astype(str).to_numpy(),
                n_per_class=10,
                instance_source="pool",
                seed=0,
            )
            used = set(pool.obs["patient"].astype(str).to_numpy()[syn.indices])
            assert not used & held_out
    with pytest.raises(ValueError, match="leakage rule"):
        build_pool(patients, paths, roles=("train", "test"))


def test_dirichlet_multinomial_recovers_alpha_with_zero_counts():
    rng = np.random.default_rng(1)
    alpha = np.array([6.0, 3.0, 1.0, 0.3])  # the last cluster is often absent from a patient
    props = rng.dirichlet(alpha, size=800)
    counts = np.array([rng.multinomial(rng.integers(100, 300), p) for p in props])
    assert (counts[:, 3] == 0).mean() > 0.2
    alpha_hat, method = fit_dirichlet_multinomial(counts)
    assert method == "mle"
    np.testing.assert_allclose(alpha_hat, alpha, rtol=0.1)
    # the proportion-based fit on the same data misses the concentration by far more (measured: 7.3 vs 10.3)
    alpha_p, _ = fit_dirichlet(counts / counts.sum(axis=1, keepdims=True))
    assert abs(alpha_p.sum() - alpha.sum()) / alpha.sum() > 0.2


def test_alignment_uses_shared_classes_and_keeps_the_class_difference():
    from recipe_mil.recipes.pool import fit_alignment

    rng = np.random.default_rng(0)
    # target: classes a (mean 0) and b (mean 2); external: the same classes shifted by +3 and scaled by 2, plus a
    # class c (mean 5 before the shift) that the target cohort lacks
    n = 3000
    tgt = np.vstack([rng.normal(0, 1, (n, 4)), rng.normal(2, 1, (n, 4))])
    tgt_lab = np.array(["a"] * n + ["b"] * n)
    ext = np.vstack([rng.normal(0, 1, (n, 4)), rng.normal(2, 1, (n, 4)), rng.normal(5, 1, (n, 4))]) * 2 + 3
    ext_lab = np.array(["a"] * n + ["b"] * n + ["c"] * n)
    centre = fit_alignment(tgt, tgt_lab, ext, ext_lab, "centre")
    assert centre.classes == ("a", "b")  # statistics from the shared classes only, class c's rows ignored
    np.testing.assert_allclose(centre.apply(ext)[ext_lab != "c"].mean(0), 1.0, atol=0.1)  # shared classes' mean
    std = fit_alignment(tgt, tgt_lab, ext, ext_lab, "standardise").apply(ext)
    for c, mu in (("a", 0.0), ("b", 2.0)):
        np.testing.assert_allclose(std[ext_lab == c].mean(0), mu, atol=0.15)
    # class c keeps its distance from the shared classes (5 on the target scale), within-class sd is matched
    np.testing.assert_allclose(std[ext_lab == "c"].mean(0), 5.0, atol=0.2)
    np.testing.assert_allclose(std[ext_lab == "a"].std(0), 1.0, atol=0.1)
    # an external cohort holding only the class the target lacks cannot be aligned: refused, naming both sides
    with pytest.raises(ValueError, match="needs a class with patients in both cohorts"):
        fit_alignment(tgt, tgt_lab, ext[ext_lab == "c"], ext_lab[ext_lab == "c"], "centre")
    with pytest.raises(ValueError, match="align_external must be one of"):
        fit_alignment(tgt, tgt_lab, ext, ext_lab, "zscore")


def test_sample_groups_draws_without_repeats_and_uniformly():
    from recipe_mil.recipes.generate import sample_groups

    rng = np.random.default_rng(0)
    counts = np.array([5, 0, 30, 50, 60, 1] * 200)  # 50 of 50 members: the fallback; 60 > 50: with replacement
    out = sample_groups(counts, 50, rng)
    assert len(out) == counts.sum() and out.min() >= 0 and out.max() < 50
    groups = np.split(out, np.cumsum(counts)[:-1])
    for cnt, g in zip(counts, groups, strict=True):
        if cnt <= 50:
            assert len(np.unique(g)) == cnt  # no member twice in one group
    # every member equally likely
    freq = np.bincount(out, minlength=50) / len(out)
    assert np.abs(freq - 1 / 50).max() < 0.003


def test_streaming_projection_equals_pca_on_all_rows():
    from sklearn.decomposition import PCA

    from recipe_mil.recipes.pool import fit_projection

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(3000, 30)) @ rng.normal(size=(30, 30)) * 3 + 7).astype(np.float32)
    chunks = [x[:1], x[1:1000], x[1000:1001], x[1001:]]  # uneven blocks, as bags come
    proj = fit_projection(chunks, standardize=True, n_pcs=6)
    xs = (x - x.mean(0, dtype=np.float64)) / x.std(0, dtype=np.float64)
    ref = PCA(6, svd_solver="full").fit(xs)
    np.testing.assert_allclose(proj.mean, x.mean(0, dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(proj.explained_variance * 3000 / 2999, ref.explained_variance_, rtol=1e-4)
    z = proj.transform(x)
    np.testing.assert_allclose(np.abs(z), np.abs(ref.transform(xs)), atol=1e-3)  # equal up to the axis signs
    # sign convention: the largest loading of each axis is positive
    assert (proj.components[np.abs(proj.components).argmax(0), np.arange(6)] > 0).all()
    # no standardisation, no PCA: centring only
    plain = fit_projection([x], standardize=False, n_pcs=None)
    np.testing.assert_allclose(plain.transform(x), x - x.mean(0, dtype=np.float64), atol=1e-4)


def test_pool_file_holds_no_features_and_the_bags_give_back_the_old_pool_exactly(tmp_path):
    """The pool is a row index into the bags: materialised, it is the stacked pool (external rows aligned) bit for
    bit, and the GMM space and clusters are those of the in-memory pipeline it replaced (issue 16)."""
    import h5py

    from recipe_mil.io.bags import read_bag, read_bags, write_bag
    from recipe_mil.recipes.gmm import fit_gmm
    from recipe_mil.recipes.pipeline import alignment_reference
    from recipe_mil.recipes.pool import (
        Projection,
        fit_alignment,
        gmm_space,
        pool_chunks,
        pool_features,
        pool_instance_ids,
        project_pool,
        read_pool,
        write_pool,
    )

    bags = {"dim": 6, "size_range": (30, 60), "seed": 0}
    target, _ = simulate_bag_cohort(tmp_path / "t", n_per_class=4, **bags)
    healthy = {"healthy": DEFAULT_PROPORTIONS["healthy"]}  # the external cohort: healthy patients only
    ext = {"class_proportions": healthy, "n_per_class": 3, "cohort": "external", "prefix": "E"}
    external, _ = simulate_bag_cohort(tmp_path / "e", **ext, **bags)
    patients = pd.concat([target.assign(role="train"), external.assign(role="external")], ignore_index=True)
    patients.loc[[0, 5], "role"] = "test"  # held out: never pooled, never read
    paths = dict(zip(patients["patient"], patients["path"], strict=True))
    config = RecipeConfig(n_components=3, n_pcs=4, standardize=True, align_external="standardise", n_init=1)
    fit = fit_fold_recipes(patients, paths, config, seed=3)
    pool = fit.pool
    assert pool.n_vars == 0 and "X_gmm" not in pool.obsm and pool.obs["row"].dtype == np.int32
    # the old pool: every pooled bag stacked in pool order, the external rows aligned in place
    pooled = patients[patients["role"].isin(["train", "external"])]
    old_x, _, _ = read_bags(pooled["path"].tolist())
    tgt = (pool.obs["cohort"].astype(str) == "target").to_numpy()
    ref = alignment_reference(patients)
    ref_x, offsets, _ = read_bags(ref["path"].tolist())
    labels = pool.obs["label"].astype(str).to_numpy()
    ref_labels = np.repeat(ref["label"].to_numpy(), np.diff(offsets))
    alignment = fit_alignment(old_x[tgt], labels[tgt], ref_x, ref_labels, "standardise")
    old_x[~tgt] = alignment.apply(old_x[~tgt])
    x = pool_features(pool, paths)
    assert x.dtype == np.float32 and (~tgt).sum() > 0
    np.testing.assert_array_equal(x, old_x)
    np.testing.assert_array_equal(np.concatenate(list(pool_chunks(pool, paths, chunk_rows=37))), old_x)
    np.testing.assert_array_equal(pool_features(pool, paths, rows=np.array([5, 2, 390])), old_x[[5, 2, 390]])
    # the GMM space and clusters of the old in-memory path, from the same numbers
    z_old, proj_old = gmm_space(old_x, standardize=True, n_pcs=4, fit_rows=tgt)
    stored = Projection.from_uns(pool.uns["projection"])
    np.testing.assert_array_equal(stored.components, proj_old.components)
    np.testing.assert_array_equal(project_pool(pool, paths, stored), z_old)
    gmm = fit_gmm(z_old[tgt], 3, n_init=1, seed=3, covariance_type="full", reg_covar=1e-4, subsample=20000)
    np.testing.assert_array_equal(pool.obs["cluster"].to_numpy(), gmm.predict(z_old))
    np.testing.assert_array_equal(pool.uns["gmm_model"]["means"], gmm.model.means_)
    # the file: obs and parameters only; read back with the bags, the same matrix
    path = tmp_path / "pool.h5ad"
    write_pool(path, pool)
    with h5py.File(path) as f:
        assert "X" not in f and len(f["obsm"]) == 0 and "instance_id" not in f["obs"]
    back = read_pool(path, paths)
    np.testing.assert_array_equal(back.X, old_x)
    assert read_pool(path).n_vars == 0
    with pytest.raises(ValueError, match="holds no features"):
        write_pool(tmp_path / "copy.h5ad", back)
    first = pooled["patient"].iloc[0]
    np.testing.assert_array_equal(
        pool_instance_ids(back, paths)[: (back.obs["patient"] == first).sum()],
        read_bag(paths[first], features=False).instance_ids,
    )
    # a bag rewritten with fewer instances than the pool points to: refused, not silently misread
    write_bag(paths[first], old_x[:3], ["a", "b", "c"], patient=first, label="x", encoder="test")
    with pytest.raises(ValueError, match="does not hold the pool's rows"):
        pool_features(back, paths)
