"""A study in parts: a part runs only its datasets and scenario families, and the parts' tables combine into the
summary the whole study writes (recipe_mil.study, `recipe-mil summarize`)."""

import re

import numpy as np
import pandas as pd
import pytest
import yaml

from recipe_mil.cli import main
from recipe_mil.evaluate import paired_comparisons, sort_runs
from recipe_mil.io.tables import read_tsv
from recipe_mil.scenarios import configured_scenarios
from recipe_mil.study import (
    StudyPart,
    SummaryPaths,
    combine_parts,
    power_markdown,
    power_projection,
    projected_mdd,
    study_part,
    variance_components,
    write_summary,
)
from test_workflow import REPO, snakemake


def study_rows(seed=0):
    """Per-run rows of two datasets, each with full, a low-data draw and a missing class: 5 folds x 2 seeds."""
    rng = np.random.default_rng(seed)
    rows = []
    groups = [("full", np.nan, np.nan, ""), ("low_data", 2, 0, ""), ("missing_class", np.nan, np.nan, "healthy")]
    for dataset in ("d1", "d2"):
        for scenario, n, draw, missing in groups:
            for fold in range(5):
                for s in range(2):
                    base = 0.7 + rng.normal(0, 0.05)
                    for method, shift in (("real_only", 0.0), ("recipe", 0.05), ("remix", -0.02)):
                        rows.append(
                            dict(
                                dataset=dataset,
                                scenario=scenario,
                                method=method,
                                repeat=0,
                                fold=fold,
                                seed=s,
                                n_real_train=12,
                                n_synthetic=0 if method == "real_only" else 6,
                                balanced_accuracy=base + shift + rng.normal(0, 0.02),
                                accuracy=0.7,
                                macro_f1=0.7,
                                auroc=0.8,
                                n_per_class=n,
                                draw=draw,
                                missing_class=missing,
                            )
                        )
    summary = sort_runs(pd.DataFrame(rows))  # as collect_metrics orders the workflow's runs
    keys = ["dataset", "scenario", "method", "repeat", "fold", "seed", "n_per_class", "draw", "missing_class"]
    recall = sort_runs(
        pd.concat([summary[keys].assign(**{"class": c, "recall": 0.5}) for c in ("healthy", "sick")]), then=["class"]
    )
    realism = summary[summary["method"] != "real_only"][
        ["dataset", "scenario", "n_per_class", "draw", "missing_class", "method", "repeat", "fold"]
    ]
    realism = realism.drop_duplicates().assign(
        **{"class": "sick", "n_synthetic": 6, "n_heldout": 4},
        **{m: 0.1 for m in ("mmd_instance", "mmd_instance_ref", "mmd_bag", "mmd_bag_ref")},
        **{"c2st": 0.6, "c2st_p": 0.2, "c2st_ref": 0.55, "c2st_ref_p": 0.3},
    )
    return summary, recall, realism


def test_parts_combine_into_the_whole_studys_summary(tmp_path):
    summary, recall, realism = study_rows()
    write_summary(summary, realism, recall, SummaryPaths.in_folder(tmp_path / "whole"))
    for name, dataset in (("a", "d1"), ("b", "d2")):
        write_summary(
            summary[summary["dataset"] == dataset],
            realism[realism["dataset"] == dataset],
            recall[recall["dataset"] == dataset],
            SummaryPaths.in_folder(tmp_path / "parts" / name),
        )
    parts = [str(tmp_path / "parts" / n) for n in ("a", "b")]
    assert main(["summarize", *parts, "--out", str(tmp_path / "combined")]) == 0
    whole, combined = tmp_path / "whole", tmp_path / "combined"
    for name in ("summary.tsv", "comparisons.tsv", "recall.tsv", "realism.tsv", "summary.md"):
        assert (combined / name).read_text() == (whole / name).read_text(), name
    comp = read_tsv(combined / "comparisons.tsv")
    # 2 datasets x 3 scenarios x 2 methods against real_only, 5 splits of 2 seeds each
    assert len(comp) == 12 and set(comp["n_resamples"]) == {5} and set(comp["n_runs"]) == {10}
    assert (comp[comp["method"] == "recipe"]["mean_diff"] > 0).all()
    assert (combined / "plots" / "differences.png").stat().st_size > 0


def test_overlapping_or_incomplete_parts_are_refused(tmp_path):
    summary, recall, realism = study_rows()
    for name in ("a", "b"):
        write_summary(summary, realism, recall, SummaryPaths.in_folder(tmp_path / name))
    with pytest.raises(ValueError, match="in more than one part"):
        combine_parts([tmp_path / "a", tmp_path / "b"])
    (tmp_path / "b" / "recall.tsv").unlink()
    with pytest.raises(ValueError, match=r"b/recall.tsv: missing"):
        combine_parts([tmp_path / "b"])
    assert main(["summarize", str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 1


def test_study_part_selects_and_checks():
    config = {
        "datasets": {"d1": {}, "d2": {}},
        "parts": {
            "a": {"datasets": ["d1"], "families": ["full", "missing_class"]},
            "all_low": {"families": ["low_data"]},
        },
    }
    assert study_part(config) is None and study_part({**config, "part": None}) is None
    a = study_part({**config, "part": "a"})
    assert a == StudyPart("a", ("d1",), ("full", "missing_class"))
    assert a.includes("d1", "missing_class-healthy") and a.includes("d1", "full")
    assert not a.includes("d1", "low_data-n2-d0") and not a.includes("d2", "full")
    n16 = study_part({**config, "parts": {"x": {"datasets": ["d2"], "scenarios": ["low_data-n16-*"]}}, "part": "x"})
    assert n16.includes("d2", "low_data-n16-d2") and not n16.includes("d2", "low_data-n2-d0")
    assert not n16.includes("d1", "low_data-n16-d2")
    low = study_part({**config, "part": "all_low"})
    assert low.includes("d2", "low_data-n4-d1") and not low.includes("d2", "full")
    with pytest.raises(ValueError, match="not one of the config's parts"):
        study_part({**config, "part": "c"})
    with pytest.raises(ValueError, match="datasets the config does not have: d3"):
        study_part({**config, "parts": {"x": {"datasets": ["d3"]}}, "part": "x"})
    with pytest.raises(ValueError, match="unknown scenario families: lowdata"):
        study_part({**config, "parts": {"x": {"families": ["lowdata"]}}, "part": "x"})


def planned(output: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", output, flags=re.M)}


def test_a_part_plans_only_its_datasets_and_families(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["parts"] = {"flow_full": {"datasets": ["demo_flow"], "families": ["full"]}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    whole = planned((r := snakemake(tmp_path, "--configfile", str(path), "-n", "--quiet", "rules", timeout=300)).stdout)
    assert r.returncode == 0, r.stderr[-3000:]
    res = snakemake(
        tmp_path, "--configfile", str(path), "--config", "part=flow_full", "-n", "--quiet", "rules", timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    part = planned(res.stdout)
    splits = config["splits"]["n_folds"] * config["splits"].get("n_repeats", 1)
    # one dataset, one family: its training jobs only, and no other dataset is embedded
    assert part["train_mil_full"] == splits * config["mil"]["n_seeds"] < whole["train_mil_full"]
    assert not any(k.startswith("train_mil_") and k != "train_mil_full" for k in part)
    assert part["summary"] == 1 and "embed_scrna_demo_scrna" not in part and part["embed_flow"] > 0
    bad = snakemake(tmp_path, "--configfile", str(path), "--config", "part=nope", "-n", timeout=300)
    assert bad.returncode != 0 and "part 'nope' is not one of the config's parts (flow_full)" in bad.stdout + bad.stderr


def test_the_benchmarks_parts_cover_every_run_once():
    config = yaml.safe_load((REPO / "config" / "benchmark.yaml").read_text())
    planned_by = {}
    for name in config["parts"]:
        part = study_part({**config, "part": name})
        for dataset, ds in config["datasets"].items():
            for scenario in configured_scenarios(config["scenarios"], ds["classes"]):
                if part.includes(dataset, scenario):
                    planned_by.setdefault((dataset, scenario), []).append(name)
    every = {
        (d, s) for d, ds in config["datasets"].items() for s in configured_scenarios(config["scenarios"], ds["classes"])
    }
    assert set(planned_by) == every and len(every) == 3 * (1 + 4 * 3 + 3)
    assert {k: v for k, v in planned_by.items() if len(v) > 1} == {}


def noisy_runs(sd_split, sd_seed, *, repeats, folds=5, seeds=4, mean=0.04, seed=0):
    """Runs of real_only and recipe whose paired difference is mean + a split effect + a seed effect."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(repeats):
        for f in range(folds):
            split = rng.normal(0, sd_split)
            for s in range(seeds):
                base = 0.7 + rng.normal(0, 0.05)
                for method, value in (("real_only", base), ("recipe", base + mean + split + rng.normal(0, sd_seed))):
                    rows.append(
                        dict(
                            dataset="d",
                            scenario="full",
                            method=method,
                            repeat=r,
                            fold=f,
                            seed=s,
                            balanced_accuracy=value,
                            n_per_class=np.nan,
                            draw=np.nan,
                            missing_class="",
                        )
                    )
    return pd.DataFrame(rows)  # fmt: skip


def test_variance_components_recover_split_and_seed_noise_and_project_the_mdd():
    comp = variance_components(noisy_runs(0.03, 0.05, repeats=60))
    (row,) = comp.to_dict("records")
    assert (row["n_splits"], row["n_seeds"], row["ratio"]) == (300, 4, 0.25)
    assert row["sd_split"] == pytest.approx(0.03, rel=0.2) and row["sd_seed"] == pytest.approx(0.05, rel=0.1)
    # at the observed design the projection is the comparisons' own minimal detectable difference
    small = noisy_runs(0.03, 0.05, repeats=2, seed=1)
    comp = variance_components(small)
    observed = paired_comparisons(small).set_index("method").loc["recipe", "mdd"]
    if comp.loc[0, "sd_split"] > 0:  # not clipped: the identity is exact
        assert projected_mdd(comp).iloc[0] == pytest.approx(observed, rel=1e-9)
    # more seeds shrink only the seed part; the floor is what no number of splits and seeds goes below
    table = power_projection(small)
    r = table.iloc[0]
    assert r["mdd: 10 seeds per split"] <= r["mdd: this design"] and r["mdd: 5x10 splits, 10 seeds"] > r["mdd floor"]
    assert r["mdd floor"] == pytest.approx(2.8016 * r["sd_split"] * 0.5)
    md = power_markdown(small)
    assert "## Power: the smallest difference the study can detect" in md and "| d | full | 10 | 4 |" in md
