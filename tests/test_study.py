"""Selection policies, baselines and realism scores (issue 5)."""

import anndata as ad
import numpy as np
import pytest
import torch

from recipe_mil.baselines import psemix_bags, pseudo_bags, remix_bags, shuffle_bags
from recipe_mil.mil import BagCollection, GatedAttentionMIL
from recipe_mil.realism import c2st_accuracy, mmd_rbf, realism_scores
from recipe_mil.recipes.pipeline import RecipeConfig, fit_fold_recipes
from recipe_mil.recipes.pool import pool_features
from recipe_mil.select import mc_dropout_probs, select_bags, uncertainty_scores
from recipe_mil.simulate.bags import simulate_bag_cohort


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    sheet, _ = simulate_bag_cohort(tmp_path_factory.mktemp("bags"), n_per_class=6, size_range=(60, 120), seed=4)
    paths = dict(zip(sheet["patient"], sheet["path"], strict=True))
    fit = fit_fold_recipes(sheet.assign(role="train"), paths, RecipeConfig(n_components=5, n_pcs=None), seed=0)
    return read_pool_with_features(fit.pool, paths)


def read_pool_with_features(pool, paths):
    """The pool with its features read from the bags (the pool itself holds none)."""
    return ad.AnnData(X=pool_features(pool, paths), obs=pool.obs, uns=pool.uns)


def test_uncertainty_scores_and_policies_on_a_hand_made_case():
    # 4 bags of class 0, 2 passes, 2 classes
    probs = np.array(
        [
            [[0.9, 0.1], [0.5, 0.5], [0.9, 0.1], [0.2, 0.8]],
            [[0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [0.3, 0.7]],
        ]
    )
    labels = np.zeros(4, dtype=int)
    s = uncertainty_scores(probs, labels)
    # bag 2 flips between passes: the highest mutual information; bag 1 is uncertain but consistent
    assert int(np.argmax(s["bald"])) == 2
    assert s["bald"][1] == pytest.approx(0.0, abs=1e-9) and s["entropy"][1] == pytest.approx(np.log(2))
    assert s["variation_ratio"].tolist() == [0.0, 0.0, 0.5, 0.0]
    np.testing.assert_allclose(s["p_label"], [0.9, 0.5, 0.5, 0.25])
    keep = select_bags(s, labels, policy="most_uncertain", n_per_class=1, classes=[0])
    assert keep.tolist() == [False, False, True, False]
    # confident and consistent: bag 0 (0.9, predicted 0) first, then bag 1 (0.5 ties broken to class 0)
    keep = select_bags(s, labels, policy="confident_consistent", n_per_class=2, classes=[0])
    assert keep.tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="unknown selection policy"):
        select_bags(s, labels, policy="random", n_per_class=1, classes=[0])


def test_mc_dropout_passes_differ_and_eval_is_restored():
    torch.manual_seed(0)
    model = GatedAttentionMIL(4, 3, hidden=16, attention_dim=8, dropout=0.5)
    rng = np.random.default_rng(0)
    bags = BagCollection.from_offsets(
        rng.normal(size=(50, 4)).astype(np.float32), np.array([0, 20, 50]), np.array([0, 1]), ["a", "b"]
    )
    probs = mc_dropout_probs(model, bags, passes=8, seed=1)
    assert probs.shape == (8, 2, 3)
    assert probs.std(axis=0).max() > 1e-3
    assert not model.training
    np.testing.assert_allclose(probs, mc_dropout_probs(model, bags, passes=8, seed=1))


def test_shuffle_uses_only_the_class_instances(pool):
    syn = shuffle_bags(pool.obs, ["healthy", "disease"], n_per_class=10, seed=0)
    labels = pool.obs["label"].astype(str).to_numpy()
    sizes = pool.obs.groupby("patient", observed=True).size()
    assert len(syn) == 20
    for bag, lab in zip(syn.bags(), syn.label, strict=True):
        assert (labels[bag] == lab).all() and len(np.unique(bag)) == len(bag)
        assert sizes.min() <= len(bag) <= sizes.max()


def test_remix_keeps_bag_labels_and_stays_near_the_class(pool):
    x = pool.X
    syn = remix_bags(x, pool.obs, ["healthy", "disease"], n_per_class=12, n_prototypes=6, seed=0)
    assert syn.features is not None and len(syn) == 24
    assert list(syn.label) == ["healthy"] * 12 + ["disease"] * 12
    labels = pool.obs["label"].astype(str).to_numpy()
    for bag, lab in zip(syn.bags(), syn.label, strict=True):
        protos = syn.features[bag]
        assert 6 <= len(protos) <= 12
        # every prototype lies close to real instances of the bag's own class (within the data's scale)
        d = ((protos[:, None, :] - x[None, labels == lab, :]) ** 2).sum(-1).min(axis=1)
        assert np.sqrt(d).max() < 3.0
    with pytest.raises(ValueError, match="unknown ReMix mode"):
        remix_bags(x, pool.obs, ["healthy"], n_per_class=1, modes=["mixup"], seed=0)


def test_pseudo_bags_are_a_stratified_partition():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c * 10, 1, size=(n, 2)) for c, n in enumerate([40, 12, 8])])
    parts = pseudo_bags(x, 4, 3, seed=0)
    allidx = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(allidx, np.arange(len(x)))
    cluster = np.repeat([0, 1, 2], [40, 12, 8])
    for p in parts:
        # each pseudo-bag holds about a quarter of every phenotype
        np.testing.assert_allclose(np.bincount(cluster[p], minlength=3), [10, 3, 2], atol=1)


def test_psemix_soft_labels_mix_in_the_ratio_of_pseudo_bags(pool):
    syn = psemix_bags(pool.X, pool.obs, ["healthy", "disease"], n_per_class=15, n_pseudo=4, seed=0)
    assert syn.soft_targets.shape == (30, 2)
    np.testing.assert_allclose(syn.soft_targets.sum(axis=1), 1.0)
    # mixing weights are multiples of 1/n_pseudo and the hard label is their argmax
    np.testing.assert_allclose((syn.soft_targets * 4) % 1, 0, atol=1e-6)
    assert [["healthy", "disease"][i] for i in syn.soft_targets.argmax(axis=1)] == list(syn.label)
    labels = pool.obs["label"].astype(str).to_numpy()
    for bag, target in zip(syn.bags(), syn.soft_targets, strict=True):
        share = np.mean(labels[bag] == "disease")
        assert abs(share - target[1]) < 0.35  # instance share follows the soft label (pseudo-bags differ in size)
    assert (syn.soft_targets.max(axis=1) < 1).any()  # some bags are truly mixed


def test_mmd_near_zero_for_one_cohort_and_large_between_classes():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, size=(400, 5))
    b = rng.normal(0, 1, size=(400, 5))
    c = rng.normal(1.0, 1, size=(400, 5))
    same, diff = mmd_rbf(a, b), mmd_rbf(a, c)
    assert abs(same) < 0.01 and diff > 0.1 and diff > 20 * abs(same)
    assert c2st_accuracy(a[:40], b[:40]) < 0.7 and c2st_accuracy(a[:40], c[:40]) > 0.8
    bags = lambda mu, n: [rng.normal(mu, 1, size=(50, 5)) for _ in range(n)]  # noqa: E731
    scores = realism_scores(bags(0, 10), bags(0, 10), bags(0, 10))
    assert scores["mmd_instance"] < 0.01 and abs(scores["mmd_bag"]) < 0.15
    far = realism_scores(bags(1.0, 10), bags(0, 10), bags(0, 10))
    assert far["mmd_bag"] > 0.5 and far["c2st"] > 0.9 and far["c2st_ref"] < 0.8


def test_synthetic_collection_uses_own_features_and_soft_targets(pool):
    from recipe_mil.experiment import synthetic_collection

    remix = remix_bags(pool.X, pool.obs, ["healthy", "disease"], n_per_class=3, n_prototypes=4, seed=0)
    coll = synthetic_collection(remix, pool.X, ["healthy", "disease"])
    np.testing.assert_array_equal(coll.features[coll.bag_indices[0]], remix.features[remix.bags()[0]])
    mixed = psemix_bags(pool.X, pool.obs, ["healthy", "disease"], n_per_class=3, seed=0)
    coll = synthetic_collection(mixed, pool.X, ["healthy", "disease"])
    np.testing.assert_allclose(coll.soft_targets, mixed.soft_targets)
    np.testing.assert_array_equal(coll.features[coll.bag_indices[1]], pool.X[mixed.bags()[1]])


def test_realism_reference_c2st_is_computed_once_per_class_and_run(monkeypatch):
    import recipe_mil.realism as realism

    rng = np.random.default_rng(0)
    held = realism.HeldOut.of([rng.normal(size=(30, 4)) for _ in range(5)], max_instances=100, rng=rng)
    pool = {"a": [rng.normal(size=(30, 4)) for _ in range(6)]}
    methods = {m: [rng.normal(0.2 * i, size=(30, 4)) for _ in range(6)] for i, m in enumerate("xyz")}
    expected = realism.c2st(realism.bag_means(pool["a"]), held.means, permutations=5, seed=3)
    calls = []
    real_c2st = realism.c2st
    monkeypatch.setattr(realism, "c2st", lambda *a, **k: calls.append(1) or real_c2st(*a, **k))
    rows = [
        realism.realism_table(bags, ["a"] * 6, pool, {"a": held}, max_instances=100, permutations=5, seed=3)[0]
        for bags in methods.values()
    ]
    assert len(calls) == 3 + 1  # one C2ST per method, one reference for the class
    assert all((r["c2st_ref"], r["c2st_ref_p"]) == expected for r in rows)
