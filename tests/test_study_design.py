"""The study's design (issue 11): shrunk Dirichlets, controls, common seeds, validation and selection for a class the
reference model never saw, and the statistics of the summary."""

import numpy as np
import pandas as pd
import pytest

from recipe_mil.augment import GENERATORS, GeneratorInput, make_synthetic
from recipe_mil.evaluate import (
    collect_metrics,
    corrected_resampled_t,
    holm,
    minimal_detectable_difference,
    paired_comparisons,
    summary_markdown,
)
from recipe_mil.experiment import FoldData, hold_out_unseen, run_fold, select_candidates
from recipe_mil.methods import AUGMENTED_METHODS, METHODS, generators_for, methods_for
from recipe_mil.mil import BagCollection, TrainConfig
from recipe_mil.realism import c2st, median_bandwidth, mmd_rbf, realism_scores
from recipe_mil.recipes.generate import SyntheticSet
from recipe_mil.recipes.pipeline import RecipeConfig, fit_fold_recipes
from recipe_mil.recipes.pool import pool_features
from recipe_mil.recipes.recipes import fit_class_dirichlets, fit_dirichlet_multinomial
from recipe_mil.select import SelectConfig
from recipe_mil.simulate.bags import simulate_bag_cohort

# ---------------------------------------------------------------- Dirichlet concentration at small n


def simulated_counts(rng, n, s_true=20.0, k=6):
    """Three classes (one uniform, two moving 0.25 onto their own cluster), ~300 instances per patient."""
    means = [np.full(k, 1 / k)]
    for j in range(2):
        m = np.full(k, 0.75 / k)
        m[j] += 0.25
        means.append(m)
    out = {}
    for c, m in enumerate(means):
        p = rng.dirichlet(m * s_true, size=n)
        sizes = np.clip(rng.normal(300, 80, size=n), 50, None).astype(int)
        out[f"c{c}"] = np.stack([rng.multinomial(sz, pp) for sz, pp in zip(sizes, p, strict=True)])
    return out


@pytest.mark.parametrize(
    ("n", "median_range", "p95_max"),
    [(2, (14, 28), 70), (4, (15, 26), 45), (8, (16, 25), 34)],
)
def test_shrunk_concentration_matches_the_truth_at_few_patients(n, median_range, p95_max):
    rng = np.random.default_rng(n)
    shrunk, mle = [], []
    for _ in range(100):
        counts = simulated_counts(rng, n)
        shrunk += [a.sum() for a, _ in fit_class_dirichlets(counts).values()]
        if n == 2:
            mle += [fit_dirichlet_multinomial(x)[0].sum() for x in counts.values()]
    # truth 20. Measured over 300 replicates: n=2 median 20.3, 95th percentile 42 (maximum likelihood: 47.5, 329);
    # n=4 20.4 / 33 (29.2 / 60); n=8 20.6 / 30 (24.0 / 38)
    lo, hi = median_range
    assert lo < np.median(shrunk) < hi
    assert np.percentile(shrunk, 95) < p95_max
    if n == 2:  # the first version's estimate, for contrast
        assert np.median(mle) > 35 and np.percentile(mle, 95) > 150


def test_shrinkage_leaves_a_well_sampled_class_alone_and_keeps_means():
    rng = np.random.default_rng(3)
    counts = simulated_counts(rng, 60)
    fits = fit_class_dirichlets(counts)
    for c, (alpha, how) in fits.items():
        mle, _ = fit_dirichlet_multinomial(counts[c])
        assert how == "shrunk"
        np.testing.assert_allclose(alpha / alpha.sum(), mle / mle.sum(), atol=1e-12)
        assert abs(alpha.sum() - 20) < 5
    single = fit_class_dirichlets({"a": counts["c0"][:1], "b": counts["c1"][:1]})
    assert {how for _, how in single.values()} == {"moments"}  # nothing to estimate a dispersion from


# ---------------------------------------------------------------- methods and controls


def test_method_registry_runs_controls_where_they_mean_something():
    every = list(METHODS)
    assert "ablation_external_instances" not in methods_for(every, "full")
    assert "real_external" not in methods_for(every, "low_data-n2-d0")
    miss = methods_for(every, "missing_class-healthy")
    assert {"real_external", "ablation_external_instances", "ablation_pooled_proportions"} <= set(miss)
    assert set(generators_for(every, "missing_class-x")) == set(GENERATORS)
    assert "recipe_candidates" in generators_for(every, "full") and "recipe_selected" in AUGMENTED_METHODS
    with pytest.raises(ValueError, match="unknown methods"):
        methods_for(["recipe", "recipes"], "full")


@pytest.fixture(scope="module")
def missing_fold(tmp_path_factory):
    """A missing-class fold: class 'healthy' only in the external cohort (shifted by +2 in every feature)."""
    work = tmp_path_factory.mktemp("missing")
    sheet, _ = simulate_bag_cohort(work, n_per_class=8, size_range=(60, 120), seed=2)
    sheet = sheet.copy()
    healthy = sheet.index[sheet["label"] == "healthy"]
    sheet["cohort"] = "target"
    sheet.loc[healthy[:4], "cohort"] = "external"
    import h5py

    for p in sheet.loc[sheet["cohort"] == "external", "path"]:
        with h5py.File(p, "r+") as f:
            f["features"][...] = f["features"][()] + 2.0
    role = np.where(sheet["cohort"] == "external", "external", "train")
    role[(sheet["cohort"] == "target") & (sheet["label"] == "healthy")] = "test"
    patients = sheet.assign(role=role)
    paths = dict(zip(sheet["patient"], sheet["path"], strict=True))
    return patients, paths, fit_fold_recipes(patients, paths, RecipeConfig(n_components=5, n_pcs=None), seed=0)


def test_ablations_change_only_what_they_ablate(missing_fold):
    _, _, fit = missing_fold
    config = {
        "generate": {"n_per_class": 12, "instance_source": "class", "missing_class_source": "target"},
        "select": {"oversample": 2},
    }
    inp = GeneratorInput(fit.pool, fit.recipes, fit.pooled, ["healthy", "disease"], config)
    cohorts = fit.pool.obs["cohort"].astype(str).to_numpy()
    clusters = fit.pool.obs["cluster"].to_numpy()
    recipe = make_synthetic("recipe", inp, seed=5)
    ext = make_synthetic("ablation_external_instances", inp, seed=5)
    pooled = make_synthetic("ablation_pooled_proportions", inp, seed=5)
    assert fit.recipes["healthy"].cohort == "external"
    for syn in (recipe, ext, pooled):
        assert len(syn) == 24
    healthy = recipe.label == "healthy"
    # the recipe fills the missing class with target instances, the control with external ones: same draws
    assert all((cohorts[b] == "target").all() for b, h in zip(recipe.bags(), healthy, strict=True) if h)
    assert all((cohorts[b] == "external").all() for b, h in zip(ext.bags(), healthy, strict=True) if h)
    np.testing.assert_allclose(ext.proportions, recipe.proportions)
    for a, b in zip(ext.bags(), recipe.bags(), strict=True):
        np.testing.assert_array_equal(np.bincount(clusters[a], minlength=5), np.bincount(clusters[b], minlength=5))
    # the other class is generated identically
    for a, b, h in zip(ext.bags(), recipe.bags(), healthy, strict=True):
        if not h:
            np.testing.assert_array_equal(a, b)
    # pooled proportions: every class along one recipe of all target training patients, instance sources kept
    assert sorted(fit.pooled.patients) == sorted(fit.pool.obs.loc[cohorts == "target", "patient"].unique())
    assert all((cohorts[b] == "target").all() for b in pooled.bags())
    mean_p = {c: pooled.proportions[pooled.label == c].mean(axis=0) for c in ("healthy", "disease")}
    np.testing.assert_allclose(mean_p["healthy"], fit.pooled.mean_proportions, atol=0.08)
    np.testing.assert_allclose(mean_p["disease"], fit.pooled.mean_proportions, atol=0.08)


# ---------------------------------------------------------------- validation and selection for an unseen class


def test_hold_out_unseen_moves_only_classes_without_validation():
    feats = np.zeros((10, 2), np.float32)
    train = BagCollection(feats, [np.array([i]) for i in range(10)], [0, 0, 0, 1, 1, 1, 2, 2, 2, 2], list("abcdefghij"))
    val = BagCollection(feats, [np.array([0]), np.array([1])], [0, 1], ["v0", "v1"])
    rng = np.random.default_rng(0)
    new_train, new_val = hold_out_unseen(train, val, fraction=0.25, rng=rng)
    assert len(new_val) == 3 and new_val.labels.tolist() == [0, 1, 2]
    assert len(new_train) == 9 and (new_train.labels == 2).sum() == 3
    assert set(new_train.names).isdisjoint(new_val.names[2:])
    assert hold_out_unseen(train, val, fraction=0.0, rng=rng)[1] is val
    assert hold_out_unseen(train, None, fraction=0.25, rng=rng)[1] is None


def test_cross_fit_selection_picks_the_candidates_of_the_unseen_class_that_carry_its_signal(missing_fold):
    patients, paths, fit = missing_fold
    data = FoldData.load(patients, paths, ["healthy", "disease"])
    assert (data.train.labels == 1).all()  # the scoring model never sees a healthy patient
    pool_x = pool_features(fit.pool, paths)
    labels = fit.pool.obs["label"].astype(str).to_numpy()
    cohorts = fit.pool.obs["cohort"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    healthy_rows = np.flatnonzero(cohorts == "external")
    disease_rows = np.flatnonzero(labels == "disease")
    # 12 healthy candidates: 6 made of healthy instances ("good"), 6 made of disease instances ("bad")
    bags = [rng.choice(healthy_rows, 80) for _ in range(6)] + [rng.choice(disease_rows, 80) for _ in range(6)]
    bags += [rng.choice(disease_rows, 80) for _ in range(12)]
    cand = SyntheticSet.from_bags(bags, ["healthy"] * 12 + ["disease"] * 12)
    config = TrainConfig(hidden=16, attention_dim=8, epochs=40, min_epochs=10, patience=10, lr=5e-3, seed=0)
    reference = run_fold(data, ["real_only"], config, synthetic={}, pool_features=pool_x)[0]["real_only"].model
    good = np.r_[np.ones(6, bool), np.zeros(18, bool)]
    picks = {}
    for scorer in ("cross_fit", "reference"):
        sel = select_candidates(
            data,
            reference,
            SyntheticSet.from_bags(bags, list(cand.label)),
            pool_x,
            config,
            SelectConfig(passes=8, policy="confident_consistent", unseen_class=scorer),
            n_per_class=4,
            seed=1,
            unseen_val_fraction=0.25,
        )
        picks[scorer] = sel.selected[:12]
        assert sel.selected.sum() == 8
        assert (sel.scores["scorer"][:12] == (1 if scorer == "cross_fit" else 0)).all()
        assert (sel.scores["scorer"][12:] == 0).all()
    # cross-fit scores: all four picks carry the healthy signal; the reference model, which cannot predict
    # 'healthy', ranks the candidates on noise (measured here: 1 of 4 good picks)
    assert good[:12][picks["cross_fit"]].all()
    assert good[:12][picks["reference"]].sum() < 4


def test_mil_device_reaches_selection_scoring(missing_fold, monkeypatch):
    """The config's mil.device (TrainConfig.device) is where the candidates are scored, not always the CPU."""
    import recipe_mil.experiment as experiment
    from recipe_mil.mil import GatedAttentionMIL

    patients, paths, fit = missing_fold
    data = FoldData.load(patients, paths, ["healthy", "disease"])
    seen = []

    def fake_scores(model, bags, *, passes, seed, device):
        seen.append(device)
        return np.full((passes, len(bags), 2), 0.5, dtype=np.float32)

    monkeypatch.setattr(experiment, "mc_dropout_probs", fake_scores)
    rows = np.flatnonzero(fit.pool.obs["label"].astype(str).to_numpy() == "disease")
    cand = SyntheticSet.from_bags([rows[:20], rows[20:40]], ["disease", "disease"])
    pool_x = pool_features(fit.pool, paths)  # pools hold no features: the bags are the store
    select_candidates(
        data,
        GatedAttentionMIL(pool_x.shape[1], 2),
        cand,
        pool_x,
        TrainConfig(device="cuda:3"),
        SelectConfig(passes=2),
        n_per_class=1,
        seed=0,
        unseen_val_fraction=0.25,
    )
    assert seen == ["cuda:3"]


def test_every_method_of_a_fold_trains_from_the_same_seed(missing_fold):
    patients, paths, fit = missing_fold
    data = FoldData.load(patients, paths, ["healthy", "disease"])
    empty = SyntheticSet.from_bags([], [])
    config = TrainConfig(hidden=8, attention_dim=4, epochs=4, min_epochs=1, patience=2, seed=11)
    res, _ = run_fold(
        data, ["real_only", "recipe"], config, synthetic={"recipe": empty}, pool_features=pool_features(fit.pool, paths)
    )
    # the same real bags and no synthetic bag: identical models, so a paired difference measures data only
    np.testing.assert_array_equal(
        res["real_only"].predictions.filter(like="prob_").to_numpy(),
        res["recipe"].predictions.filter(like="prob_").to_numpy(),
    )
    assert set(res["real_only"].metrics["recall"]) == {"healthy"}  # the test patients of this fold are healthy


# ---------------------------------------------------------------- statistics


def test_corrected_resampled_t_by_hand():
    d = np.array([0.05, 0.10, -0.02, 0.07, 0.04])
    out = corrected_resampled_t(d, 1 / 4)  # 5-fold cross-validation
    se = np.sqrt((1 / 5 + 1 / 4) * d.var(ddof=1))
    assert out["se"] == pytest.approx(se)
    from scipy import stats

    assert out["ci_high"] - out["mean"] == pytest.approx(stats.t.ppf(0.975, 4) * se)
    assert out["p"] == pytest.approx(2 * stats.t.sf(d.mean() / se, 4))
    # the naive t-test (variance factor 1/J) would be far more confident
    assert out["p"] > 2 * stats.t.sf(d.mean() / np.sqrt(d.var(ddof=1) / 5), 4)
    assert np.isnan(corrected_resampled_t(d[:1], 0.25)["ci_low"])
    assert minimal_detectable_difference(out["se"], 4) > abs(out["ci_high"] - out["mean"])


def test_holm_adjustment():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, np.nan]), [0.03, 0.06, 0.06, np.nan])
    np.testing.assert_allclose(holm([0.5, 0.2]), [0.5, 0.4])


def run_rows(diffs_by_method, *, seeds=2, folds=5):
    rows = []
    rng = np.random.default_rng(0)
    for f in range(folds):
        for s in range(seeds):
            base = 0.7 + rng.normal(0, 0.05)
            rows.append({"method": "real_only", "fold": f, "seed": s, "balanced_accuracy": base})
            for m, d in diffs_by_method.items():
                rows.append({"method": m, "fold": f, "seed": s, "balanced_accuracy": base + d[f]})
    df = pd.DataFrame(rows).assign(dataset="d", scenario="full", repeat=0, n_per_class=np.nan, draw=np.nan)
    return df.assign(missing_class=None, n_real_train=10, n_synthetic=0, accuracy=0.5, macro_f1=0.5, auroc=0.5)


def test_paired_comparisons_count_true_pairs_and_adjust():
    summary = run_rows({"same": [0, 0, 0, 0.1, 0], "better": [0.10, 0.12, 0.08, 0.11, 0.09]})
    comp = paired_comparisons(summary).set_index("method")
    # 5 folds x 2 seeds paired runs, averaged to 5 splits; zero differences do not count for Wilcoxon
    assert comp.loc["same", "n_runs"] == 10 and comp.loc["same", "n_resamples"] == 5
    assert comp.loc["same", "n_nonzero"] == 1 and np.isnan(comp.loc["same", "wilcoxon_p"])
    assert comp.loc["better", "n_nonzero"] == 5 and comp.loc["better", "wilcoxon_p"] == pytest.approx(0.0625)
    assert comp.loc["better", "ci_low"] > 0 > comp.loc["same", "ci_low"]
    assert comp.loc["better", "p_holm"] == pytest.approx(min(1, 2 * comp.loc["better", "p"]))
    md = summary_markdown(summary)
    assert md.index("## Difference from real_only") < md.index("## Mean ± sd per method")
    assert "| d | full | 10 | " in md and "[+0.0" in md and "Holm" in md


def test_summary_has_a_seed_column(tmp_path):
    import json

    paths = []
    for seed in (0, 1):
        m = {"dataset": "d", "scenario": "full", "method": "real_only", "repeat": 0, "fold": 0, "seed": seed}
        m.update(balanced_accuracy=0.5, n_real_train=3, n_synthetic=0, accuracy=0.5, macro_f1=0.5, auroc=0.5)
        paths.append(tmp_path / f"m{seed}.json")
        paths[-1].write_text(json.dumps(m))
    s = collect_metrics(paths)
    assert list(s.columns[:6]) == ["dataset", "scenario", "method", "repeat", "fold", "seed"]
    assert s["seed"].tolist() == [0, 1]


# ---------------------------------------------------------------- realism


def test_mmd_ranks_sets_against_one_kernel():
    rng = np.random.default_rng(0)
    held, shifted, wide = rng.normal(0, 1, (300, 5)), rng.normal(1.0, 1, (300, 5)), rng.normal(1.0, 3, (300, 5))
    bw = median_bandwidth(held)
    # a shifted set that is also 3x over-dispersed is further from the held-out set than the shifted one alone
    assert mmd_rbf(wide, held, bandwidth=bw) > mmd_rbf(shifted, held, bandwidth=bw)
    # a kernel re-estimated per comparison (the first version) widens with the spread and ranks it better
    assert mmd_rbf(wide, held) < mmd_rbf(shifted, held)
    bags = lambda x: np.split(x, 10)  # noqa: E731
    r_shift = realism_scores(bags(shifted), bags(held), bags(held), seed=0)
    r_wide = realism_scores(bags(wide), bags(held), bags(held), seed=0)
    assert r_wide["mmd_instance"] > r_shift["mmd_instance"]
    assert r_wide["mmd_instance_ref"] == pytest.approx(r_shift["mmd_instance_ref"])  # same reference, same kernel


def test_c2st_permutation_p_value():
    rng = np.random.default_rng(0)
    same = c2st(rng.normal(size=(10, 4)), rng.normal(size=(10, 4)), permutations=50, seed=0)
    apart = c2st(rng.normal(size=(10, 4)), rng.normal(3, 1, size=(10, 4)), permutations=50, seed=0)
    assert same[1] > 0.1 and apart[1] < 0.05 and apart[0] > 0.9


def test_c2st_is_sklearns_ridge_classifier_and_its_p_value_is_calibrated():
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    for d in (4, 30):
        x, y = rng.normal(size=(20, d)), rng.normal(0.4, 1, size=(8, d))
        z, t = np.vstack([x, y]), np.r_[np.zeros(20), np.ones(8)]
        cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=7)
        ref = make_pipeline(StandardScaler(), RidgeClassifier(alpha=d))
        expected = cross_val_score(ref, z, t, cv=cv, scoring="balanced_accuracy").mean()
        assert c2st(x, y, seed=7)[0] == pytest.approx(expected, abs=1e-12)
    # under the null the permutation p-value is uniform: about 5% of tests fall below 0.05
    p = np.array(
        [c2st(rng.normal(size=(20, 8)), rng.normal(size=(8, 8)), permutations=40, seed=i)[1] for i in range(150)]
    )
    assert 0.005 <= (p < 0.05).mean() <= 0.11 and 0.12 <= (p < 0.2).mean() <= 0.30


def test_equal_differences_up_to_rounding_have_no_interval_and_no_test():
    # averages over seeds of equal differences differ in their last bits; that is not a noise estimate
    d = np.array([(0.1 + 0.2) / 3 - 0.1 + 1e-3, 0.3 / 3 - 0.1 + 1e-3])
    assert d[0] != d[1]
    out = corrected_resampled_t(d, 1.0)
    assert out["se"] == 0 and np.isnan(out["ci_low"]) and np.isnan(out["ci_high"]) and np.isnan(out["p"])
    assert np.isnan(minimal_detectable_difference(out["se"], out["df"]))
    assert corrected_resampled_t(np.array([1e-17, 0.0]), 1.0)["p"] == 1.0
