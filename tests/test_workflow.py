"""Workflow tests: Snakemake on tiny configs (dry runs, lint, one end-to-end run, bad input)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from recipe_mil.evaluate import SUMMARY_COLUMNS
from recipe_mil.experiment import load_model
from recipe_mil.io.attention import read_attention
from recipe_mil.io.bags import read_bag
from recipe_mil.io.synthetic import read_recipes, read_synthetic
from recipe_mil.methods import AUGMENTED_METHODS, METHODS, methods_for
from recipe_mil.simulate.bags import simulate_bag_cohort
from recipe_mil.simulate.flow import FLOW_PANEL, event_populations
from recipe_mil.simulate.image import read_image_truth
from recipe_mil.simulate.scrna import ScrnaSimParams, simulate_scrna_cohort, write_h5ad_atomic

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "seed": 1,
    "datasets": {
        "tiny_scrna": {
            "modality": "scrna",
            "classes": ["healthy", "disease_a", "disease_b"],
            "simulate": {
                "n_patients_per_class": 6,
                "n_genes": 200,
                "cells_per_patient_mean": 120,
                "cells_per_patient_sd": 20,
                "external": {"classes": ["healthy"], "n_patients_per_class": 2},
            },
            "scrna": {"n_top_genes": 100, "n_pcs": 10, "min_genes": 10},
        },
    },
    "splits": {"n_folds": 2},
    "scenarios": {
        "full": True,
        "low_data": {"n_per_class": [2], "draws": 1},
        "missing_class": {"classes": ["healthy"]},
    },
    "methods": list(METHODS),
    "gmm": {"n_components": [3, 6], "n_init": 1},
    "generate": {"n_per_class": 5},
    "select": {"passes": 4, "oversample": 2},
    "realism": {"c2st_permutations": 10},
    "mil": {
        "epochs": 5,
        "min_epochs": 1,
        "patience": 2,
        "hidden": 16,
        "attention_dim": 8,
        "device": "cpu",
        "n_seeds": 2,
    },
}


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)


def write_config(workdir: Path, config: dict) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


CI_PROFILE = ("--workflow-profile", str(REPO / "profiles/ci"))


def run_to_end(workdir: Path, config: dict) -> tuple[Path, subprocess.CompletedProcess]:
    """Write ``config`` into ``workdir`` and run the workflow there to the end (2 cores, CI profile)."""
    cfg = write_config(workdir, config)
    res = snakemake(workdir, "--configfile", str(cfg), "--cores", "2", *CI_PROFILE)
    assert res.returncode == 0, res.stderr[-5000:]
    return cfg, res


def test_demo_config_dry_run_and_lint(tmp_path):
    # planned in a temporary folder: a finished demo in the repository root must not change what the tests see
    demo = ("--configfile", str(REPO / "config" / "config.yaml"))
    res = snakemake(tmp_path, *demo, "-n", "--quiet", "rules", timeout=300)
    assert res.returncode == 0, res.stderr
    assert re.search(r"^train_mil_full\s+\d+$", res.stdout + res.stderr, flags=re.M), res.stdout  # every job planned
    lint = snakemake(tmp_path, *demo, "--lint", timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr


# `tiny_run` (one end-to-end run of TINY, shared with tests/test_report.py) is in tests/conftest.py


def test_end_to_end_summary_rows(tiny_run):
    work, _, _ = tiny_run
    summary = pd.read_csv(work / "results/summary.tsv", sep="\t")
    assert list(summary.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    # (full + low_data n=2) x 2 folds x 2 seeds x 7 methods + missing_class x 2 folds x 2 seeds x 9 methods
    # (real_external and ablation_external_instances run only where a class is missing)
    assert len(summary) == 2 * 2 * 2 * 7 + 2 * 2 * 9
    counts = summary.groupby(["scenario", "method"]).size()
    assert (counts == 4).all() and len(counts) == 2 * 7 + 9
    assert (summary.groupby(["scenario", "fold"])["seed"].nunique() == 2).all()
    assert (summary.loc[summary["method"].isin(["real_only", "real_external"]), "n_synthetic"] == 0).all()
    augmented = summary[~summary["method"].isin(["real_only", "real_external"])]
    # the same number of synthetic patients for every augmentation method: 5 per class; where a class is
    # missing, one of its 5 is held out for validation (it has no real validation patient)
    assert (augmented.loc[augmented["scenario"] != "missing_class", "n_synthetic"] == 15).all()
    assert (augmented.loc[augmented["scenario"] == "missing_class", "n_synthetic"] == 14).all()
    low = summary[summary["scenario"] == "low_data"]
    assert (low["n_real_train"] == 6).all() and (low["n_per_class"] == 2).all()
    miss = summary[summary["scenario"] == "missing_class"]
    assert (miss["missing_class"] == "healthy").all()
    full_train = summary.loc[(summary["scenario"] == "full") & (summary["method"] == "real_only"), "n_real_train"]
    n_healthy_train = full_train.to_numpy() / 3  # balanced classes
    real_only_miss = miss.loc[miss["method"] == "real_only", "n_real_train"].to_numpy()
    np.testing.assert_allclose(real_only_miss, full_train.to_numpy() - n_healthy_train)
    # external healthy patients as they are: of the 2 external patients 1 trains, 1 validates
    np.testing.assert_allclose(miss.loc[miss["method"] == "real_external", "n_real_train"], real_only_miss + 1)
    for m in ("balanced_accuracy", "accuracy", "macro_f1", "auroc"):
        assert summary[m].between(0, 1).all()
    md = (work / "results/summary.md").read_text()
    assert md.startswith("# recipe-mil summary") and md.index("## Difference from real_only") < md.index("## Mean")
    assert "| tiny_scrna | full | recipe | 4 |" in md
    assert "| tiny_scrna | missing_class (healthy) | real_external | 4 |" in md
    assert "Wilcoxon" in md and "Realism" in md and "Recall per class" in md and "Holm" in md
    realism = pd.read_csv(work / "results/realism.tsv", sep="\t")
    assert set(realism["method"]) == set(AUGMENTED_METHODS)
    assert realism["c2st"].dropna().between(0, 1).all() and realism["c2st_p"].dropna().between(0, 1).all()
    comparisons = pd.read_csv(work / "results/comparisons.tsv", sep="\t")
    assert {"mean_diff", "ci_low", "ci_high", "p_holm", "n_nonzero", "wilcoxon_p", "mdd"} <= set(comparisons.columns)
    recall = pd.read_csv(work / "results/recall.tsv", sep="\t")
    assert set(recall["class"]) == {"healthy", "disease_a", "disease_b"}
    for png in (
        "plots/metrics.png",
        "plots/realism.png",
        "tiny_scrna/plots/full/recipes.png",
        "tiny_scrna/plots/missing_class-healthy/umap.png",
        "tiny_scrna/plots/full/uncertainty.png",
        "tiny_scrna/plots/full/attention.png",
    ):
        assert (work / "results" / png).stat().st_size > 10_000, png


def test_end_to_end_leakage_and_outputs(tiny_run):
    work, _, _ = tiny_run
    runs = sorted((work / "results").glob("*/*/r0f*/patients.tsv"))
    assert len(runs) == 6
    for patients_tsv in runs:
        patients = pd.read_csv(patients_tsv, sep="\t", dtype=str)
        held_out = set(patients.loc[patients["role"].isin(["val", "test"]), "patient"])
        pool = ad.read_h5ad(patients_tsv.parent / "pool.h5ad")
        pooled = set(pool.obs["patient"].astype(str))
        assert pooled == set(patients.loc[patients["role"].isin(["train", "external"]), "patient"])
        assert not pooled & held_out
        for generator in (
            "recipe",
            "shuffle",
            "psemix",
            "recipe_candidates",
            "recipe_selected/s0",
            "recipe_selected/s1",
        ):
            syn = read_synthetic(patients_tsv.parent / f"synthetic/{generator}.h5")
            assert not set(pool.obs["patient"].astype(str).to_numpy()[syn.indices]) & held_out
        # common random numbers: every method of a fold and training seed trained from one seed
        for s in ("s0", "s1"):
            seeds = {json.loads(m.read_text())["mil_seed"] for m in patients_tsv.parent.glob(f"*/{s}/metrics.json")}
            assert len(seeds) == 1
        meta = json.loads((patients_tsv.parent / "recipes.json").read_text())
        assert {"truth_ari", "k_at_grid_edge", "criterion_values", "standardized", "pooled_target"} <= set(meta)
        assert meta["standardized"] is False  # scRNA PCA scores are never rescaled
        if "missing_class" in str(patients_tsv):
            # the missing class: no target training patient, its recipe from the external cohort only
            assert not ((patients["label"] == "healthy") & patients["role"].isin(["train", "val"])).any()
            recipes, _ = read_recipes(patients_tsv.parent / "recipes.json")
            assert recipes["healthy"].cohort == "external"
            assert all(p.startswith("E") for p in recipes["healthy"].patients)
            # instance_source target: its synthetic bags are filled with target-cohort instances
            syn = read_synthetic(patients_tsv.parent / "synthetic/recipe.h5")
            rows = np.concatenate([b for b, lab in zip(syn.bags(), syn.label, strict=True) if lab == "healthy"])
            assert (pool.obs["cohort"].astype(str).to_numpy()[rows] == "target").all()
        pred = pd.read_csv(patients_tsv.parent / "recipe/s0/predictions.tsv", sep="\t", dtype={"patient": str})
        assert set(pred["patient"]) == set(patients.loc[patients["role"] == "test", "patient"])
        # every test instance's attention, in bag order (the instance ids come from the bags)
        bag_paths = {p: str(work / f"results/tiny_scrna/bags/{p}.h5") for p in pred["patient"]}
        att = read_attention(patients_tsv.parent / "recipe/s1/attention.npz", bag_paths)
        assert list(att.drop_duplicates("patient")["patient"]) == list(pred["patient"])
        assert att.groupby("patient")["attention"].sum().round(4).eq(1.0).all()
        first = pred["patient"].iloc[0]
        ids = read_bag(bag_paths[first], features=False).instance_ids
        assert list(att.loc[att["patient"] == first, "instance_id"]) == list(ids)
        # the fold models are not kept by default (mil.keep_models)
        assert not list(patients_tsv.parent.glob("*/s*/model.pt"))
    # every rule wrote its log
    assert (work / "logs/tiny_scrna/embed_scrna.log").stat().st_size > 0
    # the simulator's per-cell truth, carried into the bags by the embed step
    target = ad.read_h5ad(work / "results/tiny_scrna/raw/target.h5ad")
    bag = read_bag(work / "results/tiny_scrna/bags/P000.h5")
    np.testing.assert_array_equal(bag.truth["cell_type"], target.obs.loc[bag.instance_ids, "cell_type"].astype(str))
    assert set(bag.truth["state"]) <= {"baseline", "shifted", "disease_only"}
    assert len(list((work / "logs").rglob("train_mil_s*.log"))) == 3 * 2 * 2


def file_sizes(root: Path, skip: tuple[str, ...]) -> dict[str, int]:
    """Bytes per kind of file under ``root`` (file name; ``synthetic/*.h5`` together), top folders ``skip`` left out."""
    kinds: dict[str, int] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and rel.parts[0] not in skip:
            kind = "synthetic/*.h5" if "synthetic" in rel.parts else path.name
            kinds[kind] = kinds.get(kind, 0) + path.stat().st_size
    return kinds


def feature_matrices(path: Path, width: int, min_rows: int) -> list[tuple[str, tuple[int, ...]]]:
    """Float datasets of an HDF5 file that could be instance features: ``width`` columns, ``min_rows`` rows or more."""
    import h5py

    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" and obj.ndim == 2:
            if obj.shape[1] == width and obj.shape[0] >= min_rows:
                found.append((name, obj.shape))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return found


def test_fold_files_hold_no_copy_of_the_features(tiny_run):
    """Issue 16: the bag files are the feature store; no fold or scenario file holds a copy of instance features."""
    work, _, _ = tiny_run
    root = work / "results/tiny_scrna"
    bag_files = sorted((root / "bags").glob("*.h5"))
    bags = sum(p.stat().st_size for p in bag_files)
    width = read_bag(bag_files[0]).features.shape[1]
    smallest_bag = min(len(read_bag(p, features=False).instance_ids) for p in bag_files)
    # the per-fold and per-scenario files: everything but the bags, the raw data and the figures
    kinds = file_sizes(root, skip=("bags", "raw", "plots"))
    total = sum(kinds.values())
    print(f"per-fold files {total} B / bags {bags} B = {total / bags:.3f} (embedding width {width})")
    for kind, size in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {kind}: {size} B ({size / bags:.3f} of the bags)")
    pools = sorted(root.glob("*/r*f*/pool.h5ad"))
    assert len(pools) == 6
    copies = []
    for path in root.rglob("*.h5*"):
        rel = path.relative_to(root)
        if rel.parts[0] in ("bags", "raw"):
            continue
        for name, shape in feature_matrices(path, width, min_rows=smallest_bag):
            # ReMix/PseMix prototypes (k-means centres of the bags) are the baselines' own features, allowed
            if not (path.name in ("remix.h5", "psemix.h5") and name == "features"):
                copies.append((str(rel), name, shape))
    assert not copies, copies
    for path in pools:
        pool = ad.read_h5ad(path)
        assert pool.n_vars == 0 and not len(pool.obsm) and not len(pool.layers)
        assert {"patient", "row", "label", "cohort", "cluster"} <= set(pool.obs) and "instance_id" not in pool.obs
        assert {"projection", "gmm", "gmm_model", "n_features"} <= set(pool.uns)
    # the six pools held the pooled features (1.95 x the bags before issue 16); now row indices and parameters: 0.34
    # x the bags at this embedding width of 10 (0.64 with variable-length strings), mostly HDF5 object headers
    assert kinds["pool.h5ad"] < 0.5 * bags, kinds["pool.h5ad"] / bags
    # attention: 4 bytes a test instance and run, no ids (attention.tsv was 5.28 x the bags: 28 B a row)
    attention = sorted(root.rglob("attention.npz"))
    assert len(attention) == 2 * 2 * 7 * 2 + 2 * 2 * 9 and not list(root.rglob("attention.tsv"))
    weights = sum(len(read_attention(p)) for p in attention)
    assert kinds["attention.npz"] < 4 * weights + 1000 * len(attention), (kinds["attention.npz"], weights)
    # the fold models are not kept by default (mil.keep_models; they were 0.98 x the bags)
    assert "model.pt" not in kinds
    # 8.27 x the bags before; a fifth is out of reach in this run: 92 trainings of 20 patients write their tables
    # (predictions, metrics, history: 1.4 kB a training, 0.23 x the bags) and 50 sets of synthetic patients
    assert total < 2.5 * bags, total / bags


def bags_study(tmp_path: Path, **patch) -> tuple[pd.DataFrame, dict]:
    """A simulated cohort of bag files in ``tmp_path`` (dataset ``bags``) and a TINY config of its full scenario
    with real_only and recipe; ``patch`` adds or replaces top-level keys."""
    sheet, _ = simulate_bag_cohort(tmp_path / "input_bags", n_per_class=6, dim=6, size_range=(40, 80), seed=2)
    sheet.to_csv(tmp_path / "bags.tsv", sep="\t", index=False)
    config = {
        **TINY,
        "datasets": {
            "bags": {"modality": "bags", "classes": ["healthy", "disease"], "samples": str(tmp_path / "bags.tsv")}
        },
        "scenarios": {"full": True},
        "methods": ["real_only", "recipe"],
    }
    return sheet, {**config, **patch}


def test_bags_modality_end_to_end(tmp_path):
    _, config = bags_study(tmp_path)
    run_to_end(tmp_path, {**config, "mil": {**config["mil"], "keep_models": True}})
    summary = pd.read_csv(tmp_path / "results/summary.tsv", sep="\t")
    assert len(summary) == 8 and set(summary["method"]) == {"real_only", "recipe"}
    # mil.keep_models: every training's model is kept, and predicts its test patients as the run did
    models = sorted((tmp_path / "results/bags/full").glob("r*f*/*/s*/model.pt"))
    assert len(models) == 8
    model = load_model(models[0])
    pred = pd.read_csv(models[0].parent / "predictions.tsv", sep="\t", dtype={"patient": str})
    bag = read_bag(tmp_path / f"results/bags/bags/{pred['patient'].iloc[0]}.h5")
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(bag.features)[None], torch.ones(1, len(bag.features), dtype=torch.bool))
    prob = torch.softmax(logits, -1)[0].numpy()
    np.testing.assert_allclose(prob, pred.filter(like="prob_").iloc[0].to_numpy(float), atol=1e-5)
    bag = read_bag(tmp_path / "results/bags/bags/healthy_00.h5")
    assert bag.label == "healthy" and bag.encoder == "gaussian-blobs" and bag.features.shape[1] == 6


def test_console_shows_one_line_per_finished_job(tiny_run):
    """The console of the tiny run: one line per job with its key figure; epochs and tables stay in the logs."""
    work, _, res = tiny_run
    lines = (res.stdout + res.stderr).splitlines()
    assert len(lines) < 105, "\n".join(lines)
    assert not [line for line in lines if "epoch" in line or "Shell command" in line]
    # simulate, embed, bag index, splits, 3 scenarios x 2 folds x (scenario_patients, recipes, generate, realism),
    # 3 families x 2 folds x 2 seeds of training, 2 fold plots, summary, all
    n = 4 + 6 * 4 + 12 + 2 + 2
    jobs = [line for line in lines if re.match(rf"\[\d\d:\d\d:\d\d\] \d+/{n} ", line)]
    assert len(jobs) == n and jobs[-1].endswith(f"{n}/{n} all")
    train = [line for line in jobs if re.search(r" train_mil_\w+\(dataset=tiny_scrna, ", line)]
    assert len(train) == 12
    for line in train:
        figures = re.search(r"test balanced accuracy: (.*)$", line).group(1).split(", ")
        family = "missing_class" if "train_mil_missing_class(" in line else "full"
        assert [f.split()[0] for f in figures] == [m for m in METHODS if m in methods_for(list(METHODS), family)]
        assert all(0 <= float(f.split()[1]) <= 1 for f in figures)
    assert any(
        re.search(r" recipes\(dataset=tiny_scrna, scenario=full, repeat=0, fold=0\): K=\d+ \(icl\);", line)
        for line in jobs
    )
    log = (work / "logs/tiny_scrna/full/r0f0/train_mil_s0.log").read_text()
    assert len(re.findall(r"epoch \d+/5 train_loss=", log)) >= 6  # at least one epoch per method, in the log


def test_rerun_is_noop_and_report(tiny_run):
    work, cfg, _ = tiny_run
    res = snakemake(work, "--configfile", str(cfg), "-n", *CI_PROFILE)
    assert res.returncode == 0
    assert "Nothing to be done" in res.stdout + res.stderr
    rep = snakemake(work, "--configfile", str(cfg), "--report", "report.html", *CI_PROFILE)
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert (work / "report.html").stat().st_size > 50_000


def _scrna_user_dataset(work: Path, sheet_rows: list[tuple[str, str]]) -> dict:
    h5ad = work / "cohort.h5ad"
    if not h5ad.exists():
        adata = simulate_scrna_cohort(ScrnaSimParams(n_patients_per_class=3, n_genes=100, cells_per_patient_mean=90))
        write_h5ad_atomic(adata, h5ad)
    (work / "sheet.tsv").write_text("patient\tlabel\n" + "".join(f"{p}\t{lab}\n" for p, lab in sheet_rows))
    return {
        "modality": "scrna",
        "classes": ["healthy", "disease_a", "disease_b"],
        "h5ad": str(h5ad),
        "samples": str(work / "sheet.tsv"),
    }


GOOD_ROWS = [(f"P{i:03d}", lab) for i, lab in enumerate(["healthy"] * 3 + ["disease_a"] * 3 + ["disease_b"] * 3)]


@pytest.mark.parametrize(
    ("rows", "config_patch", "message"),
    [
        (GOOD_ROWS, {}, None),
        (GOOD_ROWS + [("P999", "healthy")], {}, "patient not found in the target .h5ad at line 11 (P999)"),
        (GOOD_ROWS + [("P000", "healthy")], {}, "duplicate patient ids at line 2 (P000), line 11 (P000)"),
        (GOOD_ROWS[:-1] + [("P008", "diseas_b")], {}, "label not among the config's classes"),
        (GOOD_ROWS[:-1], {"splits": {"n_folds": 3}}, "class 'disease_b' has 2 target patients"),
        (GOOD_ROWS, {"splits": {"n_folds": 1}}, "n_folds"),
        (GOOD_ROWS, {"mil": {"dropout": 1.5}}, "dropout"),
        (GOOD_ROWS, {"scenarios": {"low_data": {"n_per_class": [3]}}}, "low_data.n_per_class=3"),
        (GOOD_ROWS, {"h5ad": "missing.h5ad"}, "datasets.user.h5ad: file missing.h5ad does not exist"),
    ],
)
def test_bad_input_fails_before_any_job(tmp_path, rows, config_patch, message):
    ds = _scrna_user_dataset(tmp_path, rows)
    if "h5ad" in config_patch:
        ds["h5ad"] = config_patch.pop("h5ad")
    config = {"datasets": {"user": ds}, "splits": {"n_folds": 2}, **config_patch}
    cfg = write_config(tmp_path, config)
    res = snakemake(tmp_path, "--configfile", str(cfg), "-n", timeout=300)
    if message is None:
        assert res.returncode == 0, res.stderr
    else:
        assert res.returncode != 0
        assert message in res.stderr + res.stdout
        assert not (tmp_path / "results").exists()


def test_alignment_without_a_shared_class_fails_before_any_job(tmp_path):
    # the tiny dataset's external cohort holds only 'healthy', the class missing_class removes from the target
    # training patients: a cohort shift cannot be told from the class difference
    cfg = write_config(tmp_path, {**TINY, "recipes": {"align_external": "centre"}})
    res = snakemake(tmp_path, "--configfile", str(cfg), "-n", timeout=300)
    assert res.returncode != 0
    assert "recipes.align_external='centre'" in res.stderr + res.stdout
    assert "shares no class with the target training patients" in res.stderr + res.stdout
    assert not (tmp_path / "results").exists()


def test_flow_and_image_modalities_end_to_end(tmp_path):
    """Simulated FCS files and smear crops through embedding, recipes and MIL (small: mechanics, not accuracy)."""
    config = {
        **TINY,
        "datasets": {
            "tiny_flow": {
                "modality": "flow",
                "classes": ["healthy", "aml", "low_blast"],
                "simulate": {
                    "n_patients_per_class": 4,
                    "events_mean": 600,
                    "events_sd": 50,
                    "min_events": 300,
                    "external": {"classes": ["healthy"], "n_patients_per_class": 1},
                },
                "flow": {"max_events": 300, "panel": FLOW_PANEL},
            },
            "tiny_smear": {
                "modality": "image",
                "classes": ["healthy", "aml", "eosinophilia"],
                "simulate": {"n_patients_per_class": 4, "crops_per_patient_mean": 12, "min_crops_per_patient": 8},
            },
        },
        "scenarios": {"full": True},
        "methods": ["real_only", "recipe"],
    }
    run_to_end(tmp_path, config)
    summary = pd.read_csv(tmp_path / "results/summary.tsv", sep="\t")
    # 2 datasets x 2 folds x 2 methods x 2 training seeds
    assert len(summary) == 2 * 2 * 2 * 2 and set(summary["dataset"]) == {"tiny_flow", "tiny_smear"}
    flow_bag = read_bag(tmp_path / "results/tiny_flow/bags/F000.h5")
    # the whole panel, matched across both simulated instruments by alias
    assert flow_bag.features.shape == (300, len(FLOW_PANEL)) and flow_bag.encoder == "flow-logicle"
    ext_bag = read_bag(tmp_path / "results/tiny_flow/bags/X000.h5")
    assert ext_bag.features.shape[1] == len(FLOW_PANEL)
    smear_bag = read_bag(tmp_path / "results/tiny_smear/bags/P000.h5")
    assert smear_bag.encoder == "morphology" and smear_bag.instance_ids[0].endswith(".png")
    # the simulators' per-instance truth, carried into the bags by the embed steps
    events = event_populations(tmp_path / "results/tiny_flow/raw/files/target", "F000")
    np.testing.assert_array_equal(flow_bag.truth["cell_type"], events[flow_bag.instance_ids.astype(int)])
    crops = read_image_truth(tmp_path / "results/tiny_smear/raw/files/target").set_index("instance_id")
    np.testing.assert_array_equal(smear_bag.truth["cell_type"], crops.loc[smear_bag.instance_ids, "cell_type"])
    assert set(ext_bag.truth["state"]) <= {"baseline", "shifted", "disease_only"}


def flow_user_dataset(sheet: Path) -> dict:
    """``datasets`` entry of a user flow cohort (the simulator's sheet, its 12-marker panel)."""
    return {
        "user_flow": {
            "modality": "flow",
            "classes": ["healthy", "aml", "low_blast"],
            "samples": str(sheet),
            "flow": {"max_events": 100, "panel": FLOW_PANEL},
        }
    }


def test_corrupt_fcs_names_the_file_keeps_other_bags_and_rerun_redoes_only_it(tmp_path):
    from recipe_mil.simulate.flow import FlowSimParams, simulate_flow_cohort

    sheet = simulate_flow_cohort(
        FlowSimParams(n_patients_per_class=2, events_mean=400, events_sd=20, min_events=200), tmp_path / "fcs"
    )
    sheet.to_csv(tmp_path / "flow.tsv", sep="\t", index=False)
    bad = Path(sheet["path"].iloc[1])
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[: len(good_bytes) // 2])  # truncated in the data segment
    config = {
        **TINY,
        "datasets": flow_user_dataset(tmp_path / "flow.tsv"),
        "splits": {"n_folds": 2},
        "scenarios": {"full": True},
        "methods": ["real_only"],
    }
    cfg = write_config(tmp_path, config)
    bags = [f"results/user_flow/bags/{p}.h5" for p in sheet["patient"]]
    res = snakemake(tmp_path, "--configfile", str(cfg), "--cores", "2", "--keep-going", *bags)
    assert res.returncode != 0
    log = (tmp_path / f"logs/user_flow/embed_flow/{sheet['patient'].iloc[1]}.log").read_text()
    assert str(bad) in log and "truncated" in log.lower()
    written = [p for p in sheet["patient"] if (tmp_path / f"results/user_flow/bags/{p}.h5").exists()]
    assert written == [p for i, p in enumerate(sheet["patient"]) if i != 1]
    for p in written:
        assert read_bag(tmp_path / f"results/user_flow/bags/{p}.h5").features.shape == (100, 12)
    bad.write_bytes(good_bytes)
    dry = snakemake(tmp_path, "--configfile", str(cfg), "-n", *bags)
    assert dry.returncode == 0
    planned = [line for line in (dry.stdout + dry.stderr).splitlines() if line.strip().startswith("output:")]
    assert planned == [f"    output: results/user_flow/bags/{sheet['patient'].iloc[1]}.h5"]
