"""Issue 16: the per-fold files are compact (attention.npz, fixed-length strings) and read back exactly."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from recipe_mil.io.attention import read_attention, write_attention
from recipe_mil.io.bags import write_bag
from recipe_mil.io.compact import write_compact_h5, write_strings
from recipe_mil.io.synthetic import read_synthetic, write_synthetic
from recipe_mil.recipes.pool import write_pool
from recipe_mil.types import SyntheticSet


def variable_length_strings(path) -> list[str]:
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.shape is not None:
            info = h5py.check_string_dtype(obj.dtype)
            if info is not None and info.length is None:
                found.append(name)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return found


def test_attention_file_round_trip_with_instance_ids_from_the_bags(tmp_path):
    rng = np.random.default_rng(0)
    sizes = {"NA": 5, "Pé": 3, "P2": 1, "P3": 7}  # an id pandas would read as missing, a non-ASCII one
    paths = {}
    for p, n in sizes.items():
        ids = [f"{p}_cell{i}" for i in range(n)]
        paths[p] = tmp_path / f"{p}.h5"
        write_bag(paths[p], rng.normal(size=(n, 4)).astype(np.float32), ids, patient=p, label="x", encoder="t")
    weights = [rng.dirichlet(np.ones(n)).astype(np.float32) for n in sizes.values()]
    table = pd.DataFrame(
        {
            "patient": np.repeat(list(sizes), list(sizes.values())),
            "instance_id": [f"{p}_cell{i}" for p, n in sizes.items() for i in range(n)],
            "attention": np.concatenate(weights),
        }
    )
    write_attention(tmp_path / "a.npz", table)
    write_attention(tmp_path / "b.npz", table)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()  # deterministic
    back = read_attention(tmp_path / "a.npz")
    assert list(back.columns) == ["patient", "row", "attention"] and back["row"].dtype == np.int32
    assert list(back["patient"]) == list(table["patient"])
    np.testing.assert_array_equal(back["attention"].to_numpy(), table["attention"].to_numpy())  # float32: exact
    assert list(back["row"]) == [i for n in sizes.values() for i in range(n)]
    with_ids = read_attention(tmp_path / "a.npz", {p: str(v) for p, v in paths.items()})
    assert list(with_ids["instance_id"]) == list(table["instance_id"])
    # 4 bytes a weight plus a small header, against a patient and an instance id per row in a TSV
    assert (tmp_path / "a.npz").stat().st_size < 4 * len(table) + 1200
    with pytest.raises(ValueError, match="together"):
        write_attention(tmp_path / "c.npz", table.iloc[[0, 5, 1]])
    short = {**{p: str(v) for p, v in paths.items()}, "NA": str(paths["P3"])}
    with pytest.raises(ValueError, match="whose bag has 7 instances"):
        read_attention(tmp_path / "a.npz", short)


def test_fixed_length_strings_read_back_as_written(tmp_path):
    values = np.array([["a", "Pé"], ["", "NA"]], dtype=object)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        write_strings(f, "s", values)
        write_strings(f, "empty", [])
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["s"].asstr()[()].tolist() == values.tolist() and f["empty"].shape == (0,)
    assert variable_length_strings(tmp_path / "s.h5") == []


def test_pool_and_synthetic_files_have_no_variable_length_strings(tmp_path):
    obs = pd.DataFrame(
        {
            "patient": pd.Categorical(np.repeat(["Pé", "NA", "P1"], 40)),
            "row": np.tile(np.arange(40, dtype=np.int32), 3),
            "label": pd.Categorical(np.repeat(["healthy", "disease", "healthy"], 40)),
            "cluster": np.arange(120) % 4,
        },
        index=[str(i) for i in range(120)],
    )
    uns = {"gmm": {"covariance_type": "full", "k": 4, "bic": {"3": 1.5}}, "mean": np.arange(5.0), "names": ["a", "b"]}
    pool = ad.AnnData(obs=obs, uns=uns)
    write_pool(tmp_path / "pool.h5ad", pool)
    assert variable_length_strings(tmp_path / "pool.h5ad") == []
    back = ad.read_h5ad(tmp_path / "pool.h5ad")
    pd.testing.assert_frame_equal(back.obs, pool.obs)
    assert back.uns["gmm"] == uns["gmm"] and list(back.uns["names"]) == ["a", "b"]
    np.testing.assert_array_equal(back.uns["mean"], uns["mean"])
    # the same pool with anndata's variable-length strings is larger (60 against 32 kB for a 736-row pool of the
    # tiny workflow run, with more string arrays than this one)
    with h5py.File(tmp_path / "plain.h5ad", "w", libver="v110") as f:
        ad.io.write_elem(f, "/", pool, dataset_kwargs={"compression": "gzip"})
    assert (tmp_path / "pool.h5ad").stat().st_size < 0.9 * (tmp_path / "plain.h5ad").stat().st_size
    syn = SyntheticSet(
        indptr=np.array([0, 2, 5]),
        indices=np.array([3, 1, 0, 7, 7]),
        label=np.array(["Pé", "healthy"], dtype=object),
        source_class=np.array(["Pé", "NA"], dtype=object),
    )
    write_synthetic(tmp_path / "syn.h5", syn, attrs={"generator": "recipé", "seed": 7})
    assert variable_length_strings(tmp_path / "syn.h5") == []
    with h5py.File(tmp_path / "syn.h5") as f:
        assert f.attrs["generator"].decode() == "recipé" and f.attrs["seed"] == 7
        assert all(not isinstance(v, str) for v in f.attrs.values())  # no variable-length string attribute
    assert (tmp_path / "syn.h5").stat().st_size < 6000  # 9.6 kB with variable-length strings
    got = read_synthetic(tmp_path / "syn.h5")
    assert list(got.label) == ["Pé", "healthy"] and list(got.source_class) == ["Pé", "NA"]
    np.testing.assert_array_equal(got.indices, syn.indices)


def test_write_compact_h5_keeps_empty_and_scalar_datasets(tmp_path):
    def fill(f):
        f.create_dataset("none", data=h5py.Empty("f4"))
        f.create_dataset("scalar", data=3.5)
        f.create_dataset("word", data="full", dtype=h5py.string_dtype())
        f.attrs["encoding-type"] = "dict"

    write_compact_h5(tmp_path / "c.h5", fill)
    with h5py.File(tmp_path / "c.h5") as f:
        assert f["none"].shape is None and f["scalar"][()] == 3.5 and f["word"].asstr()[()] == "full"
        assert f.attrs["encoding-type"] == "dict"
