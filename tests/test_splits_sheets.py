import numpy as np
import pandas as pd
import pytest

from recipe_mil.sheets import SampleSheetError, check_sheet, load_sheet
from recipe_mil.splits import make_splits, parse_scenario, scenario_patients


def _sheet(n_per_class=6, classes=("a", "b", "c"), n_ext=4):
    rows = [(f"P{c}{i}", c, "target") for c in classes for i in range(n_per_class)]
    rows += [(f"E{i}", classes[0], "external") for i in range(n_ext)]
    return pd.DataFrame(rows, columns=["patient", "label", "cohort"])


def test_splits_roles_stratified_and_complete():
    sheet = _sheet(n_per_class=7)
    splits = make_splits(sheet, n_folds=3, n_repeats=2, val_fraction=0.25, seed=1)
    target = splits[splits["cohort"] == "target"]
    for (_, _), g in target.groupby(["repeat", "fold"]):
        assert set(g["role"]) == {"train", "val", "test"}
        # every class has train, val and test patients
        assert (g.groupby(["label", "role"]).size().unstack().fillna(0) >= 1).all().all()
    # each target patient is tested exactly once per repeat
    tested = target[target["role"] == "test"].groupby(["repeat", "patient"]).size()
    assert (tested == 1).all() and len(tested) == 2 * 21
    # external patients are never test or validation
    assert set(splits.loc[splits["cohort"] == "external", "role"]) == {"external"}
    # seeded: same seed same splits, other seed different
    assert splits.equals(make_splits(sheet, n_folds=3, n_repeats=2, val_fraction=0.25, seed=1))
    assert not splits.equals(make_splits(sheet, n_folds=3, n_repeats=2, val_fraction=0.25, seed=2))


def test_splits_class_too_small():
    sheet = _sheet(n_per_class=2)
    with pytest.raises(ValueError, match="needs at least n_folds=3"):
        make_splits(sheet, n_folds=3, n_repeats=1, val_fraction=0.25, seed=0)


def test_low_data_scenario_draws_n_per_class_from_train_only():
    splits = make_splits(_sheet(n_per_class=9), n_folds=3, n_repeats=1, val_fraction=0.25, seed=0)
    full = scenario_patients(splits, repeat=0, fold=1, scenario="full", seed=0)
    low = scenario_patients(splits, repeat=0, fold=1, scenario="low_data-n2-d0", seed=0)
    assert (low[low["role"] == "train"].groupby("label").size() == 2).all()
    assert set(low.loc[low["role"] == "train", "patient"]) <= set(full.loc[full["role"] == "train", "patient"])
    for role in ("val", "test"):
        assert set(low.loc[low["role"] == role, "patient"]) == set(full.loc[full["role"] == role, "patient"])
    other = scenario_patients(splits, repeat=0, fold=1, scenario="low_data-n2-d1", seed=0)
    assert set(other.loc[other["role"] == "train", "patient"]) != set(low.loc[low["role"] == "train", "patient"])
    with pytest.raises(ValueError, match="only"):
        scenario_patients(splits, repeat=0, fold=1, scenario="low_data-n9-d0", seed=0)
    assert parse_scenario("low_data-n4-d2").n_per_class == 4
    with pytest.raises(ValueError, match="unknown scenario"):
        parse_scenario("lowdata")


def _write(tmp_path, text, name="s.tsv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_sheet_errors_name_rows(tmp_path):
    bag = tmp_path / "b.h5"
    bag.write_text("x")
    text = "patient\tlabel\tpath\n" + "".join(f"P{i}\ta\t{bag}\n" for i in range(3))
    text += f"P{0}\tb\t{bag}\nP9\tzzz\t{bag}\nP8\tb\t/nope.h5\n"
    sheet = load_sheet(_write(tmp_path, text), modality="bags")
    with pytest.raises(SampleSheetError) as err:
        check_sheet(sheet, source="s.tsv", classes=["a", "b"], n_folds=3, file_paths=True)
    msg = str(err.value)
    assert "duplicate patient ids at line 2 (P0), line 5 (P0)" in msg
    assert "label not among the config's classes ['a', 'b'] at line 6 (P9)" in msg
    assert "path does not exist at line 7 (P8: /nope.h5)" in msg
    assert "class 'b' has 2 target patients but splits.n_folds=3" in msg


def test_sheet_missing_columns_empty_and_missing_file(tmp_path):
    with pytest.raises(SampleSheetError, match="does not exist"):
        load_sheet(tmp_path / "nope.tsv", modality="scrna")
    with pytest.raises(SampleSheetError, match="is empty"):
        load_sheet(_write(tmp_path, ""), modality="scrna")
    with pytest.raises(SampleSheetError, match="no patients"):
        load_sheet(_write(tmp_path, "patient\tlabel\n"), modality="scrna")
    with pytest.raises(SampleSheetError, match=r"missing column\(s\) \['label'\]"):
        load_sheet(_write(tmp_path, "patient\tclass\nP1\ta\n"), modality="scrna")


def test_sheet_patient_not_in_h5ad(tmp_path):
    sheet = load_sheet(_write(tmp_path, "patient\tlabel\nP1\ta\nP2\ta\nP3\tb\nP4\tb\n"), modality="scrna")
    with pytest.raises(SampleSheetError, match=r"not found in the target .h5ad at line 5 \(P4\)"):
        check_sheet(
            sheet,
            source="s",
            classes=["a", "b"],
            n_folds=2,
            file_paths=False,
            known_patients={"target": ["P1", "P2", "P3"]},
        )
    check_sheet(
        sheet,
        source="s",
        classes=["a", "b"],
        n_folds=2,
        file_paths=False,
        known_patients={"target": ["P1", "P2", "P3", "P4"]},
    )
    assert np.all(sheet["cohort"] == "target")


def test_missing_class_scenario():
    splits = make_splits(_sheet(n_per_class=9), n_folds=3, n_repeats=1, val_fraction=0.25, seed=0)
    full = scenario_patients(splits, repeat=0, fold=0, scenario="full", seed=0)
    miss = scenario_patients(splits, repeat=0, fold=0, scenario="missing_class-a", seed=0)
    assert parse_scenario("missing_class-a").missing == "a"
    # the missing class never appears among target training or validation patients
    assert not ((miss["label"] == "a") & miss["role"].isin(["train", "val"])).any()
    # its real target patients stay in the test fold; its external patients are the only external ones
    assert set(miss.loc[miss["role"] == "test", "patient"]) == set(full.loc[full["role"] == "test", "patient"])
    assert set(miss.loc[miss["role"] == "external", "label"]) == {"a"}
    with pytest.raises(ValueError, match="external cohort has no patient of class 'b'"):
        scenario_patients(splits, repeat=0, fold=0, scenario="missing_class-b", seed=0)
