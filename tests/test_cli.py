"""The `recipe-mil` console script and the Python API of README "Use the library from Python", on a tiny cohort.

Every output is opened with plain h5py / pandas, not with the library.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from recipe_mil.simulate.bags import simulate_bag_cohort

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("recipe-mil")  # the console script of the venv running the tests
CLASSES = {
    "healthy": [0.45, 0.30, 0.15, 0.05, 0.05],
    "disease_a": [0.15, 0.15, 0.15, 0.45, 0.10],
    "disease_b": [0.10, 0.40, 0.10, 0.10, 0.30],
}
DIM = 6


def recipe_mil(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def cohort(folder: Path, classes: list[str], *, prefix: str = "", seed: int = 3, n: int = 5) -> pd.DataFrame:
    """A tiny cohort of bag files and its sheet (relative paths: they resolve against the sheet's folder)."""
    sheet, _ = simulate_bag_cohort(
        folder / f"bags{prefix}",
        class_proportions={c: CLASSES[c] for c in classes},
        n_per_class=n,
        dim=DIM,
        size_range=(30, 50),
        prefix=prefix,
        seed=seed,
    )
    sheet["path"] = [str(Path(p).relative_to(folder)) for p in sheet["path"]]
    return sheet[["patient", "label", "path"]]


def read_bags(sheet: pd.DataFrame, folder: Path) -> dict[str, tuple[np.ndarray, list[str]]]:
    out = {}
    for row in sheet.itertuples():
        with h5py.File(folder / row.path, "r") as f:
            out[row.patient] = (f["features"][()], list(f["instance_ids"].asstr()[()]))
    return out


def check_synthetic(out: Path, real: dict, source_cohort: set[str]) -> pd.DataFrame:
    """Open every synthetic bag: shape, label, and each instance a row of a real bag of an allowed patient."""
    syn = pd.read_csv(out / "samples.tsv", sep="\t", dtype=str)
    for row in syn.itertuples():
        with h5py.File(out / row.path, "r") as f:
            x = f["features"][()]
            assert x.dtype == np.float32 and x.shape == (int(row.n_instances), DIM)
            assert f.attrs["label"] == row.label
            names = f["instance_ids"].asstr()[()]
        sources = set()
        for xi, name in zip(x, names, strict=True):
            patient, instance = name.split(":", 1)
            assert patient in source_cohort
            real_x, real_ids = real[patient]
            np.testing.assert_array_equal(xi, real_x[real_ids.index(instance)])
            sources.add(patient)
        assert sources == set(row.source_patients.split(","))
    return syn


def test_generate_train_predict(tmp_path):
    sheet = cohort(tmp_path, ["healthy", "disease_a"])
    sheet.to_csv(tmp_path / "cohort.tsv", sep="\t", index=False)
    res = recipe_mil("generate", "cohort.tsv", "--n-per-class", "4", "--out", "synthetic", "--seed", "7", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert re.search(r"wrote 8 synthetic patients \(disease_a 4, healthy 4; K=\d+\)", res.stdout), res.stdout
    real = read_bags(sheet, tmp_path)
    label_of = dict(zip(sheet["patient"], sheet["label"], strict=True))
    syn = check_synthetic(tmp_path / "synthetic", real, set(sheet["patient"]))
    assert syn.groupby("label").size().to_dict() == {"disease_a": 4, "healthy": 4}
    for row in syn.itertuples():  # instance_source class: a bag's instances come from patients of its class
        assert {label_of[p] for p in row.source_patients.split(",")} == {row.label}
    recipes = json.loads((tmp_path / "synthetic/recipes.json").read_text())
    assert set(recipes["classes"]) == {"healthy", "disease_a"} and recipes["seed"] == 7
    assert recipes["pool_patients"] == sorted(sheet["patient"])
    # deterministic: the same seed writes the same synthetic patients
    again = recipe_mil("generate", "cohort.tsv", "--n-per-class", "4", "--out", "again", "--seed", "7", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again/samples.tsv").read_text() == (tmp_path / "synthetic/samples.tsv").read_text()
    for row in syn.itertuples():
        with h5py.File(tmp_path / "synthetic" / row.path) as a, h5py.File(tmp_path / "again" / row.path) as b:
            np.testing.assert_array_equal(a["features"][()], b["features"][()])

    res = recipe_mil(
        "train", "cohort.tsv", "--synthetic", "synthetic/samples.tsv", "--out", "model.pt", "--epochs", "3",
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "trained on 10 real + 8 synthetic patients" in res.stdout
    assert (tmp_path / "model.pt").stat().st_size > 1000
    # deterministic on the CPU: the same seed trains the same model, byte for byte
    again = recipe_mil(
        "train", "cohort.tsv", "--synthetic", "synthetic/samples.tsv", "--out", "again.pt", "--epochs", "3",
        cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.pt").read_bytes() == (tmp_path / "model.pt").read_bytes()

    # new patients, without labels
    new = cohort(tmp_path, ["healthy", "disease_a"], prefix="N", seed=11, n=2)
    new[["patient", "path"]].to_csv(tmp_path / "new.tsv", sep="\t", index=False)
    res = recipe_mil("predict", "new.tsv", "--model", "model.pt", "--out", "pred/predictions.tsv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    pred = pd.read_csv(tmp_path / "pred/predictions.tsv", sep="\t", dtype={"patient": str})
    assert list(pred.columns) == ["patient", "predicted", "prob_disease_a", "prob_healthy"]
    assert list(pred["patient"]) == list(new["patient"])
    np.testing.assert_allclose(pred[["prob_disease_a", "prob_healthy"]].sum(axis=1), 1.0, atol=1e-5)
    assert set(pred["predicted"]) <= {"healthy", "disease_a"}
    att = pd.read_csv(tmp_path / "pred/predictions_attention.tsv", sep="\t", dtype={"patient": str, "instance_id": str})
    new_bags = read_bags(new, tmp_path)
    for patient, group in att.groupby("patient"):
        assert list(group["instance_id"]) == new_bags[patient][1]  # one score per instance, in bag order
        assert group["attention"].between(0, 1).all() and abs(group["attention"].sum() - 1) < 1e-4
    assert set(att["patient"]) == set(new["patient"])


def test_generate_missing_class_from_an_external_cohort(tmp_path):
    cohort(tmp_path, ["healthy", "disease_a"]).to_csv(tmp_path / "target.tsv", sep="\t", index=False)
    ext = cohort(tmp_path, ["disease_b", "healthy"], prefix="E", seed=4, n=3)
    ext.to_csv(tmp_path / "external.tsv", sep="\t", index=False)
    args = ["generate", "target.tsv", "--n-per-class", "3", "--out", "out", "--n-components", "5"]
    res = recipe_mil(*args, "--missing-class", "disease_b", "--external", "external.tsv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    target = pd.read_csv(tmp_path / "target.tsv", sep="\t", dtype=str)
    syn = check_synthetic(
        tmp_path / "out",
        read_bags(pd.concat([target, ext]), tmp_path),
        set(target["patient"]) | set(ext.loc[ext["label"] == "disease_b", "patient"]),
    )
    assert syn.groupby("label").size().to_dict() == {"disease_a": 3, "disease_b": 3, "healthy": 3}
    # the missing class: its recipe from the external patients of that class, its instances from the target
    # cohort (missing_class_source: target); external healthy patients are not used
    recipes = json.loads((tmp_path / "out/recipes.json").read_text())
    assert recipes["classes"]["disease_b"]["cohort"] == "external" and recipes["n_clusters"] == 5
    external_b = sorted(ext.loc[ext["label"] == "disease_b", "patient"])
    assert sorted(recipes["classes"]["disease_b"]["patients"]) == external_b
    assert not set(recipes["pool_patients"]) & set(ext.loc[ext["label"] == "healthy", "patient"])
    for sources in syn.loc[syn["label"] == "disease_b", "source_patients"]:
        assert set(sources.split(",")) <= set(target["patient"])

    res = recipe_mil("generate", "target.tsv", "--n-per-class", "3", "--out", "x", "--missing-class", "y", cwd=tmp_path)
    assert res.returncode != 0 and "--missing-class and --external go together" in res.stderr
    (tmp_path / "bad.tsv").write_text("patient\tlabel\tpath\na:b\thealthy\tbags/healthy_00.h5\n")
    res = recipe_mil("generate", "bad.tsv", "--n-per-class", "3", "--out", "x", cwd=tmp_path)
    assert res.returncode == 1 and "patient ids ['a:b'] are not plain names" in res.stderr


def readme_python_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Use the library from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's code block, verbatim, on a tiny cohort in tmp_path."""
    code = readme_python_example()
    assert len(code.strip().splitlines()) <= 12
    cohort(tmp_path, ["healthy", "disease_a", "disease_b"], n=4).to_csv(tmp_path / "cohort.tsv", sep="\t", index=False)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    synthetic, bags = namespace["synthetic"], namespace["bags"]
    assert synthetic.groupby("label").size().to_dict() == {"disease_a": 10, "disease_b": 10, "healthy": 10}
    assert len(bags) == 30 and all(b.dtype == np.float32 and b.shape[1] == DIM for b in bags)
    for row in synthetic.itertuples():
        with h5py.File(tmp_path / "synthetic" / row.path, "r") as f:
            assert f["features"].shape == (int(row.n_instances), DIM) and f.attrs["label"] == row.label
    assert (tmp_path / "synthetic/recipes.json").is_file()


@pytest.mark.parametrize("command", ["generate", "train", "predict"])
def test_cli_help(command, tmp_path):
    res = recipe_mil(command, "--help", cwd=tmp_path)
    assert res.returncode == 0 and f"usage: recipe-mil {command}" in res.stdout
