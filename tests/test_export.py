"""Exported synthetic patients: the workflow's `export: true` and the bag writer, read back with plain h5py."""

import re

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from recipe_mil.export import SHEET_COLUMNS, write_synthetic_bags
from recipe_mil.recipes.generate import SyntheticSet
from recipe_mil.recipes.pool import ROW, pool_instance_ids
from recipe_mil.simulate.bags import simulate_bag_cohort
from test_workflow import CI_PROFILE, TINY, bags_study, snakemake, write_config


def real_rows(sheet: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Patient -> (features, instance ids) of the real bags, read with h5py."""
    out = {}
    for row in sheet.itertuples():
        with h5py.File(row.path, "r") as f:
            out[row.patient] = (f["features"][()], f["instance_ids"].asstr()[()])
    return out


def check_provenance(bag: h5py.File, real: dict[str, tuple[np.ndarray, np.ndarray]], allowed: set[str]) -> set[str]:
    """Every instance of a synthetic bag is the row of a real bag its instance id names; returns the sources."""
    feats = bag["features"][()]
    sources = set()
    for x, name in zip(feats, bag["instance_ids"].asstr()[()], strict=True):
        patient, instance = name.split(":", 1)
        assert patient in allowed
        real_x, real_ids = real[patient]
        np.testing.assert_array_equal(x, real_x[list(real_ids).index(instance)])
        sources.add(patient)
    return sources


def test_export_rule_writes_h5_bags_and_sheet(tmp_path):
    sheet, config = bags_study(tmp_path, generate={"n_per_class": 3}, export=True)
    cfg = write_config(tmp_path, config)
    # the export targets alone: pools, recipes and generation run, no training
    targets = [f"results/bags/export/recipe/r0f{f}/samples.tsv" for f in (0, 1)]
    res = snakemake(tmp_path, "--configfile", str(cfg), "--cores", "2", *CI_PROFILE, *targets, timeout=600)
    assert res.returncode == 0, res.stderr[-5000:]
    # rule all asks for these two sheets (besides the study's outputs)
    dry = snakemake(
        tmp_path, "--configfile", str(cfg), "-n", "--forcerun", "export_synthetic", "--quiet", "rules", timeout=300
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert re.search(r"^export_synthetic\s+2$", dry.stdout + dry.stderr, flags=re.M), dry.stdout
    real = real_rows(sheet)
    for f in (0, 1):
        folder = tmp_path / f"results/bags/export/recipe/r0f{f}"
        out = pd.read_csv(folder / "samples.tsv", sep="\t", dtype=str)
        assert list(out.columns) == list(SHEET_COLUMNS)
        assert out.groupby("label").size().to_dict() == {"disease": 3, "healthy": 3}
        assert (out["method"] == "recipe").all() and (out["source_class"] == out["label"]).all()
        assert (out["instances"] == "real").all()
        patients = pd.read_csv(folder.parents[2] / f"full/r0f{f}/patients.tsv", sep="\t", dtype=str)
        train = set(patients.loc[patients["role"] == "train", "patient"])
        label_of = dict(zip(patients["patient"], patients["label"], strict=True))
        for row in out.itertuples():
            assert row.patient.startswith(f"recipe_r0f{f}_")
            with h5py.File(folder / row.path, "r") as bag:
                assert bag["features"].dtype == np.float32 and bag["features"].ndim == 2
                assert bag["features"].shape == (int(row.n_instances), 6)
                assert bag.attrs["label"] == row.label and bag.attrs["method"] == "recipe"
                # provenance: rows of the fold's training bags of the same class (instance_source: class);
                # never a validation or test patient
                sources = check_provenance(bag, real, train)
            assert sources == set(row.source_patients.split(","))
            assert {label_of[p] for p in sources} == {row.label}
    assert (tmp_path / "logs/bags/export/recipe/r0f0/export_synthetic.log").stat().st_size > 0
    assert (tmp_path / "logs/benchmarks/bags/export/recipe/r0f0/export_synthetic.tsv").is_file()


def test_export_needs_the_full_scenario(tmp_path):
    config = {**TINY, "scenarios": {"full": False, "missing_class": {"classes": ["healthy"]}}, "export": True}
    res = snakemake(tmp_path, "--configfile", str(write_config(tmp_path, config)), "-n", timeout=300)
    assert res.returncode != 0 and "set scenarios.full: true" in res.stderr + res.stdout


@pytest.mark.parametrize("own_features", [False, True])
def test_write_synthetic_bags_materialises_pool_rows_or_own_features(tmp_path, own_features):
    sheet, _ = simulate_bag_cohort(tmp_path / "bags", n_per_class=2, dim=4, size_range=(5, 9), seed=1)
    real = real_rows(sheet)
    pool_x = np.concatenate([real[p][0] for p in sheet["patient"]])
    sizes = [len(real[p][0]) for p in sheet["patient"]]
    obs = pd.DataFrame(
        {"patient": np.repeat(sheet["patient"].to_numpy(), sizes), ROW: np.concatenate([np.arange(n) for n in sizes])}
    )
    obs.index = obs.index.astype(str)
    ids = pool_instance_ids(ad.AnnData(obs=obs), dict(zip(sheet["patient"], sheet["path"], strict=True)))
    assert list(ids) == [i for p in sheet["patient"] for i in real[p][1]]
    rng = np.random.default_rng(0)
    own = rng.normal(size=(10, 4)).astype(np.float32)
    bags = [rng.integers(0, len(own if own_features else pool_x), size=n) for n in (3, 7)]
    soft = np.array([[0.7, 0.3], [0.2, 0.8]])
    syn = SyntheticSet.from_bags(
        bags, ["healthy", "disease"], features=own if own_features else None, soft_targets=soft
    )
    out = write_synthetic_bags(
        tmp_path / "out", syn, pool_x, obs, ids, method="m", classes=["healthy", "disease"], prefix="s"
    )
    assert list(out["patient"]) == ["s_0000", "s_0001"] and list(out["n_instances"]) == [3, 7]
    for i, row in enumerate(out.itertuples()):
        with h5py.File(tmp_path / "out" / row.path, "r") as f:
            np.testing.assert_array_equal(f["features"][()], (own if own_features else pool_x)[bags[i]])
            np.testing.assert_allclose(f.attrs["soft_target"], soft[i])
            assert list(f.attrs["classes"]) == ["healthy", "disease"]
            names = f["instance_ids"].asstr()[()]
        if own_features:
            assert row.instances == "synthesised" and row.n_source_patients == 0
            assert all(n.startswith("synthesised:") for n in names)
        else:
            assert row.instances == "real"
            assert row.source_patients == ",".join(sorted(set(obs["patient"].to_numpy()[bags[i]])))
            assert [n.split(":", 1)[0] for n in names] == list(obs["patient"].to_numpy()[bags[i]])
