"""The bag files as a feature store: training and prediction read a batch of rows at a time, same numbers."""

import h5py
import numpy as np
import pytest

from recipe_mil.augment import GeneratorInput, make_synthetic
from recipe_mil.experiment import FoldData, run_fold
from recipe_mil.io.bags import read_bags
from recipe_mil.io.store import BagStore, bag_features
from recipe_mil.mil import BagCollection, TrainConfig, collate, concat_collections
from recipe_mil.mil.data import ConcatRows
from recipe_mil.recipes.pipeline import RecipeConfig, fit_fold_recipes
from recipe_mil.recipes.pool import pool_features, pool_rows
from recipe_mil.select import SelectConfig
from recipe_mil.simulate.bags import simulate_bag_cohort

CLASSES = ["healthy", "disease"]


@pytest.fixture(scope="module")
def fold(tmp_path_factory):
    """Per class 4 training, 1 validation and 1 test patient; two external healthy patients (shifted, aligned)."""
    work = tmp_path_factory.mktemp("store")
    sheet, _ = simulate_bag_cohort(work, n_per_class=8, size_range=(40, 90), dim=6, seed=3)
    sheet = sheet.copy()
    rank = sheet.groupby("label").cumcount().to_numpy()
    sheet["role"] = np.select([rank < 4, rank == 4, rank == 5], ["train", "val", "test"], "external")
    sheet["cohort"] = np.where(sheet["role"] == "external", "external", "target")
    for p in sheet.loc[sheet["cohort"] == "external", "path"]:
        with h5py.File(p, "r+") as f:
            f["features"][...] = f["features"][()] + 2.0
    # one bag chunked and compressed: read through h5py, not at a byte offset
    chunked = sheet["path"].iloc[0]
    with h5py.File(chunked, "r+") as f:
        x = f["features"][()]
        del f["features"]
        f.create_dataset("features", data=x, chunks=(7, 6), compression="gzip")
    paths = dict(zip(sheet["patient"], sheet["path"], strict=True))
    fit = fit_fold_recipes(sheet, paths, RecipeConfig(n_components=4, n_pcs=None, align_external="centre"), seed=0)
    return sheet, paths, fit


def test_store_rows_equal_the_stacked_matrix(fold):
    sheet, _, _ = fold
    paths = sheet["path"].tolist()
    full, offsets, _ = read_bags(paths)
    store, store_offsets = BagStore.from_bags(paths, max_open=3)  # fewer handles than files: the LRU closes some
    np.testing.assert_array_equal(store_offsets, offsets)
    assert store.shape == full.shape
    rows = np.random.default_rng(0).integers(0, full.shape[0], 2000)  # any order, repeats
    np.testing.assert_array_equal(store.take(rows), full[rows])
    np.testing.assert_array_equal(store[5:40], full[5:40])
    np.testing.assert_array_equal(np.asarray(store), full)
    assert len(store._open) <= 3
    assert isinstance(bag_features(paths, in_memory=False)[0], BagStore)
    assert isinstance(bag_features(paths)[0], np.ndarray)  # small: in memory by default
    both = ConcatRows([store, full[:10]])
    np.testing.assert_array_equal(both.take(np.array([full.shape[0] + 3, 2, full.shape[0]])), full[[3, 2, 0]])


def test_pool_store_applies_the_alignment(fold):
    _, paths, fit = fold
    assert "alignment" in fit.pool.uns
    store = pool_rows(fit.pool, paths, in_memory=False)
    assert isinstance(store, BagStore)
    rows = np.random.default_rng(1).permutation(fit.pool.n_obs)
    np.testing.assert_array_equal(store.take(rows), pool_features(fit.pool, paths)[rows])


def test_collate_from_a_store_is_the_in_memory_batch(fold):
    sheet, _, _ = fold
    full, offsets, _ = read_bags(sheet["path"].tolist())
    store, _ = BagStore.from_bags(sheet["path"].tolist())
    labels, names = np.arange(len(sheet)) % 2, sheet["patient"].tolist()
    mem = BagCollection.from_offsets(full, offsets, labels, names)
    lazy = concat_collections(BagCollection.from_offsets(store, offsets, labels, names), mem.subset([0]))
    for a, b in zip(
        collate(mem, [3, 1, 3], max_instances=20, rng=np.random.default_rng(4)),
        collate(lazy, [3, 1, 3], max_instances=20, rng=np.random.default_rng(4)),
        strict=True,
    ):
        assert (a is None and b is None) or torch_equal(a, b)


def torch_equal(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all())


def test_a_fold_from_the_bag_files_trains_and_predicts_as_in_memory(fold):
    """Same seed: same losses, predictions, attention and selection, features in memory or read per batch."""
    sheet, paths, fit = fold
    inp = GeneratorInput(pool=fit.pool, recipes=fit.recipes, pooled_recipe=None, classes=CLASSES, config={})
    synthetic = {g: make_synthetic(g, inp, seed=5) for g in ("recipe", "recipe_candidates")}
    config = TrainConfig(hidden=8, attention_dim=4, epochs=3, min_epochs=1, patience=2, max_instances=30, seed=7)
    out = {}
    for in_memory in (True, False):
        data = FoldData.load(sheet, paths, CLASSES, in_memory=in_memory)
        assert isinstance(data.train.features, np.ndarray) is in_memory
        out[in_memory] = run_fold(
            data,
            ["real_only", "real_external", "recipe", "recipe_selected"],
            config,
            synthetic=synthetic,
            pool_features=pool_rows(fit.pool, paths, in_memory=in_memory),
            select=SelectConfig(passes=3),
            n_per_class=2,
            select_seed=1,
        )
    (mem, mem_scored), (lazy, lazy_scored) = out[True], out[False]
    for method, res in mem.items():
        assert res.history == lazy[method].history
        assert res.predictions.equals(lazy[method].predictions)
        assert res.attention.equals(lazy[method].attention)
    np.testing.assert_array_equal(mem_scored.selected, lazy_scored.selected)
    np.testing.assert_array_equal(mem_scored.scores["bald"], lazy_scored.scores["bald"])
