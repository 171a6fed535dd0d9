"""Run it anywhere, trust it always: kill-and-resume, determinism, and bad input at every stage.

Every test runs Snakemake on a tiny config (one simulated scRNA dataset or a handful of input files,
2 folds, few methods, few epochs), so all of them are in the default test run.
"""

import copy
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from recipe_mil.experiment import load_model
from recipe_mil.io.bags import BagFileError, read_bag, read_bags, write_bag
from recipe_mil.io.synthetic import read_recipes, read_synthetic
from recipe_mil.simulate.bags import simulate_bag_cohort
from recipe_mil.simulate.scrna import ScrnaSimParams, simulate_scrna_cohort, write_h5ad_atomic
from test_workflow import (
    CI_PROFILE,
    GOOD_ROWS,
    REPO,
    TINY,
    _scrna_user_dataset,
    flow_user_dataset,
    snakemake,
    write_config,
)

# One simulated scRNA dataset, 2 folds, the full scenario, real_only + recipe: every stage
# (simulate, embed, splits, pools + GMM + recipes, generation, realism, training, summary) in 14 jobs.
# The target is the summary table (the per-fold plots would add a slow UMAP job and nothing here).
# console: snakemake, because these tests read Snakemake's own per-job output (job ids, outputs, finished jobs)
ROBUST = {
    **copy.deepcopy(TINY),
    "scenarios": {"full": True},
    "methods": ["real_only", "recipe"],
    "console": "snakemake",
}
TARGET = "results/summary.tsv"

# A temporary file of recipe_mil.io.atomic.atomic_path: ".{final name}.{random}.tmp"
ATOMIC_TMP = re.compile(r"^\.(?P<final>.+)\.[A-Za-z0-9_]{8}\.tmp$")


# ----------------------------------------------------------------------------------------------
# Snakemake's log: which jobs started, which finished, what they write
# ----------------------------------------------------------------------------------------------


def parse_jobs(log: str) -> tuple[dict[int, tuple[str, tuple[str, ...]]], set[int]]:
    """Jobs started in a Snakemake log (jobid -> (rule, outputs)) and the jobids that finished."""
    started: dict[int, tuple[str, tuple[str, ...]]] = {}
    rule, outputs = None, ()
    for line in log.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            rule, outputs = m.group(1), ()
        elif rule and (m := re.match(r"^\s+output: (.*)$", line)):
            outputs = tuple(m.group(1).split(", "))
        elif rule and (m := re.match(r"^\s+jobid: (\d+)$", line)):
            started[int(m.group(1))] = (rule, outputs)
            rule = None
    finished = {int(j) for j in re.findall(r"^Finished jobid: (\d+)", log, flags=re.M)}
    return started, finished


def total_jobs(log: str) -> int:
    """The number of jobs a Snakemake run planned (the 'total' row of its job stats)."""
    return int(re.search(r"^total\s+(\d+)$", log, flags=re.M).group(1))


def check_file(path: Path) -> None:
    """Open or parse one result file by its kind; raise if it is not complete."""
    if path.parent.name == "bags" and path.suffix == ".h5":
        read_bag(path)
    elif path.parent.name == "synthetic":
        read_synthetic(path)
    elif path.suffix == ".h5ad":
        ad.read_h5ad(path)
    elif path.name == "recipes.json":
        read_recipes(path)
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".tsv":
        assert len(pd.read_csv(path, sep="\t").columns) > 0
    elif path.suffix == ".npz":
        with np.load(path) as arrays:
            assert arrays.files and all(arrays[name].size >= 0 for name in arrays.files)
    elif path.suffix == ".pt":
        load_model(path)
    elif path.suffix == ".png":
        with Image.open(path) as im:
            im.verify()
    elif path.suffix in (".md", ".html", ".svg"):
        assert path.read_text().strip()
    else:
        raise AssertionError(f"unexpected result file {path}")


def result_files(work: Path) -> tuple[list[Path], list[Path]]:
    """Final files under results/ and leftover temporary files of atomic writes."""
    files = sorted(p for p in (work / "results").rglob("*") if p.is_file())
    return [p for p in files if not p.name.startswith(".")], [p for p in files if p.name.startswith(".")]


# `snakemake` commands that plan but run no job (-n, --unlock, a refused lock) run in one long-lived helper
# process that calls Snakemake's command-line entry point (snakemake.cli.main, what the `snakemake` command
# runs): 0.1 s a command instead of 3-4 s of start-up, and Snakemake's global state stays out of pytest.
PLANNER = r"""
import contextlib, io, json, os, sys
from snakemake.cli import main

channel = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # anything printed outside the capture goes to stderr, never into the channel
for line in sys.stdin:
    request = json.loads(line)
    os.chdir(request["cwd"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(request["args"])
            rc = 0
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:
            rc = 1
            print(f"planner: {exc!r}")
    channel.write(json.dumps({"rc": rc, "output": out.getvalue()}) + "\n")
    channel.flush()
"""


@pytest.fixture(scope="module")
def planner():
    """``planner(work, *args)``: ``snakemake -s Snakefile --directory work *args``, in the helper process."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PLANNER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )

    def plan(work: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        argv = ["-s", str(REPO / "Snakefile"), "--directory", str(work), *args]
        proc.stdin.write(json.dumps({"cwd": str(work), "args": argv}) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        assert ready, f"snakemake {' '.join(args)} did not answer within {timeout} s"
        answer = json.loads(proc.stdout.readline())
        return subprocess.CompletedProcess(argv, answer["rc"], stdout="", stderr=answer["output"])

    yield plan
    proc.stdin.close()
    proc.wait(timeout=60)


def start_run(work: Path, config: dict, cores: int) -> tuple[subprocess.Popen, Path]:
    """Start Snakemake in the background, in its own process group, logging to ``work/run1.log``."""
    cfg = write_config(work, config)
    log_path = work / "run1.log"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work)]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*cmd, "--configfile", str(cfg), "--cores", str(cores), *CI_PROFILE, TARGET],
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: one killpg reaches Snakemake and every job
        )
    return proc, log_path


def wait_for_training(work: Path, proc: subprocess.Popen, log_path: Path, deadline_s: float = 400) -> Path:
    """Poll until a train_mil job has started writing its log and none of its results exist yet."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before training started:\n{log_path.read_text()[-3000:]}")
        for log in (work / "logs").glob("*/*/r*f*/train_mil_s*.log"):
            run = work / "results" / log.parent.relative_to(work / "logs")
            seed = log.stem.rsplit("_", 1)[1]
            if log.stat().st_size > 0 and not (run / f"recipe/{seed}/metrics.json").exists():
                return log
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"no training job started within {deadline_s} s:\n{log_path.read_text()[-3000:]}")


# ----------------------------------------------------------------------------------------------
# 1. Kill and resume, 2. determinism
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory, planner):
    """The ROBUST config run twice, side by side in two folders: once uninterrupted on 1 core, once on 2 cores
    killed (SIGKILL to Snakemake and all its jobs) while a model trains, then resumed."""
    clean = tmp_path_factory.mktemp("clean")
    work = tmp_path_factory.mktemp("killed")
    clean_proc, clean_log = start_run(clean, ROBUST, cores=1)
    try:
        proc, log_path = start_run(work, ROBUST, cores=2)
        training_log = wait_for_training(work, proc, log_path)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        first_log = log_path.read_text()
        started, finished = parse_jobs(first_log)
        final, leftovers = result_files(work)
        unreadable = {}
        for path in final:
            try:
                check_file(path)
            except Exception as exc:  # recorded here, asserted on in the test
                unreadable[str(path.relative_to(work))] = repr(exc)
        missing = {o for j in set(started) - finished for o in started[j][1] if not (work / o).exists()}
        mtimes = {o: (work / o).stat().st_mtime_ns for j in finished for o in started[j][1]}
        cfg = work / "config.yaml"
        # A killed Snakemake cannot remove its lock: the next run refuses to start and says what to do.
        locked = planner(work, "--configfile", str(cfg), "--cores", "2", *CI_PROFILE, TARGET)
        unlock = planner(work, "--configfile", str(cfg), "--unlock")
        resumed = snakemake(work, "--configfile", str(cfg), "--cores", "2", *CI_PROFILE, TARGET)
        clean_proc.wait(timeout=900)
    finally:
        if clean_proc.poll() is None:
            os.killpg(clean_proc.pid, signal.SIGKILL)
    assert clean_proc.returncode == 0, clean_log.read_text()[-5000:]
    return {
        "clean": clean,
        "work": work,
        "training_log": training_log,
        "first_log": first_log,
        "started": started,
        "finished": finished,
        "leftovers": leftovers,
        "unreadable": unreadable,
        "missing": missing,
        "mtimes": mtimes,
        "locked": locked,
        "unlock": unlock,
        "resumed": resumed,
    }


def test_kill_during_training_then_resume_redoes_only_unfinished_jobs(runs):
    r = runs
    work, started, finished = r["work"], r["started"], r["finished"]
    killed = {j: started[j] for j in set(started) - finished}
    killed_rules = sorted(rule for rule, _ in killed.values())
    # the kill landed while a model was training, after the data, pools, recipes and synthetic bags were done
    assert any(rule.startswith("train_mil_") for rule in killed_rules), killed_rules
    assert {"simulate_scrna", "embed_scrna_tiny_scrna", "splits", "recipes", "generate_full"} <= {
        started[j][0] for j in finished
    }
    # every file under results/ is complete: atomic writes leave a whole file or none; a temporary file of
    # an interrupted atomic write is hidden (".name.XXXXXXXX.tmp") and never taken for a result
    assert not r["unreadable"], r["unreadable"]
    for tmp in r["leftovers"]:
        assert ATOMIC_TMP.match(tmp.name), tmp
    killed_outputs = {o for _, outs in killed.values() for o in outs}
    # the interrupted training job had not finished writing its results (what we meant to test)
    assert r["missing"] and r["missing"] <= killed_outputs
    # the next run refuses the stale lock and tells the user what to do; --unlock then works
    assert r["locked"].returncode != 0
    assert "cannot be locked" in r["locked"].stderr and "--unlock" in r["locked"].stderr
    assert r["unlock"].returncode == 0 and "Unlocked working directory" in r["unlock"].stderr
    # the resumed run completes ...
    assert r["resumed"].returncode == 0, r["resumed"].stderr[-5000:]
    summary = pd.read_csv(work / TARGET, sep="\t")
    assert len(summary) == 2 * 2 * 2 and set(summary["method"]) == {"real_only", "recipe"}  # folds x methods x seeds
    # ... running exactly the jobs that had not finished: the interrupted ones and those not started yet ...
    redone, redone_finished = parse_jobs(r["resumed"].stderr)
    assert redone_finished == set(redone)
    assert len(finished) + len(redone) == total_jobs(r["first_log"]) == total_jobs(r["resumed"].stderr) + len(finished)
    assert {o for _, outs in redone.values() for o in outs} >= killed_outputs
    # ... and nothing that had finished before the kill: its files are untouched
    for _, outs in redone.values():
        assert not set(outs) & set(r["mtimes"])
    changed = [o for o, t in r["mtimes"].items() if (work / o).stat().st_mtime_ns != t]
    assert not changed, changed
    # after the resume every result file is complete
    final, _ = result_files(work)
    for path in final:
        check_file(path)


def test_same_config_twice_gives_identical_results(runs):
    """Two runs of one config in two folders, on 1 and 2 cores, one killed and resumed: byte-identical results."""
    clean, other = runs["clean"], runs["work"]
    assert runs["resumed"].returncode == 0
    a, _ = result_files(clean)
    b, _ = result_files(other)
    rel = [p.relative_to(clean) for p in a]
    assert rel == [p.relative_to(other) for p in b]
    assert (clean / TARGET).read_bytes() == (other / TARGET).read_bytes()
    # every result, not only the summary: bags, pools, recipes, synthetic bags, predictions, models, plots
    different = [str(p) for p in rel if (clean / p).read_bytes() != (other / p).read_bytes()]
    assert not different, different
    assert len(rel) > 40


# ----------------------------------------------------------------------------------------------
# 3. Bad input: before any job where the information is there at planning time ...
# ----------------------------------------------------------------------------------------------


def fails_before_any_job(planner, work: Path, config: dict, *messages: str) -> str:
    """Plan the run (snakemake -n): it must fail, print every message, and leave no results/ behind."""
    cfg = write_config(work, config)
    res = planner(work, "--configfile", str(cfg), "-n")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    for message in messages:
        assert message in out, out[-3000:]
    assert not (work / "results").exists()
    return out


def scrna_config(work: Path, rows=GOOD_ROWS, **patch) -> dict:
    return {"datasets": {"user": _scrna_user_dataset(work, rows)}, "splits": {"n_folds": 2}, **patch}


def bags_config(work: Path, n_per_class: int = 3, **patch) -> tuple[dict, pd.DataFrame]:
    sheet, _ = simulate_bag_cohort(work / "input_bags", n_per_class=n_per_class, dim=6, size_range=(20, 30), seed=2)
    sheet.to_csv(work / "bags.tsv", sep="\t", index=False)
    ds = {"modality": "bags", "classes": ["healthy", "disease"], "samples": str(work / "bags.tsv")}
    return {"datasets": {"user_bags": ds}, "splits": {"n_folds": 2}, **patch}, sheet


def test_good_input_plans(planner, tmp_path):
    """The control: the inputs the tests below break, intact, plan fine (in the same helper process)."""
    config, sheet = bags_config(tmp_path / "bags")
    config["datasets"]["user"] = _scrna_user_dataset(tmp_path, GOOD_ROWS)
    res = planner(tmp_path, "--configfile", str(write_config(tmp_path, config)), "-n")
    assert res.returncode == 0, res.stderr[-3000:]
    planned = parse_jobs(res.stderr)[0].values()
    assert sorted(rule for rule, _ in planned if rule == "import_bag") == ["import_bag"] * len(sheet)
    assert any(rule == "embed_scrna_user" for rule, _ in planned)


def test_sheet_with_wrong_column_names(planner, tmp_path):
    config = scrna_config(tmp_path)
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text(sheet.read_text().replace("patient\tlabel", "sample_id\tdiagnosis", 1))
    fails_before_any_job(
        planner,
        tmp_path,
        config,
        f"sample sheet {sheet}: missing column(s) ['patient', 'label']; found ['sample_id', 'diagnosis']",
    )


def test_empty_sheet(planner, tmp_path):
    config = scrna_config(tmp_path)
    (tmp_path / "sheet.tsv").write_text("")
    fails_before_any_job(planner, tmp_path, config, f"sample sheet {tmp_path / 'sheet.tsv'} is empty")


def test_bags_sheet_names_a_missing_file(planner, tmp_path):
    config, sheet = bags_config(tmp_path)
    gone = Path(sheet.at[1, "path"])
    gone.unlink()
    fails_before_any_job(planner, tmp_path, config, f"path does not exist at line 3 (healthy_01: {gone})")


def test_corrupt_h5ad_names_the_file(planner, tmp_path):
    h5ad = tmp_path / "cohort.h5ad"
    h5ad.write_bytes(b"this is not an HDF5 file" * 100)  # _scrna_user_dataset keeps an existing file
    config = scrna_config(tmp_path)
    fails_before_any_job(planner, tmp_path, config, f"{h5ad}: cannot read HDF5 file")


def test_bags_of_different_widths_fail_before_any_job_naming_the_odd_file(planner, tmp_path):
    config, sheet = bags_config(tmp_path)
    odd = Path(sheet.at[4, "path"])
    write_bag(odd, np.ones((25, 8)), [str(i) for i in range(25)], patient="disease_01", label="disease", encoder="x")
    fails_before_any_job(
        planner, tmp_path, config, f"embedding widths differ: 5 bags have width 6, but line 6 (disease_01: {odd}) has 8"
    )


def test_unreadable_bag_fails_before_any_job_naming_the_file(planner, tmp_path):
    config, sheet = bags_config(tmp_path)
    bad = Path(sheet.at[0, "path"])
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    fails_before_any_job(planner, tmp_path, config, f"line 2 (healthy_00): {bad}: cannot read HDF5 file")


def test_read_bags_names_the_files_of_an_odd_width(tmp_path):
    """The same check where bags meet in a job (pools, training): the rare width's files, a few of the others."""
    paths = []
    for i, width in enumerate([6, 6, 6, 6, 8]):
        paths.append(tmp_path / f"b{i}.h5")
        write_bag(paths[-1], np.ones((3, width)), ["a", "b", "c"], patient=f"b{i}", label="x", encoder="e")
    with pytest.raises(BagFileError) as err:
        read_bags(paths)
    assert str(err.value) == (
        f"bags have different embedding widths: width 6: 4 bag(s) ({paths[0]}, {paths[1]}, {paths[2]}, ...); "
        f"width 8: {paths[4]}"
    )


def test_class_with_one_patient(planner, tmp_path):
    rows = [r for r in GOOD_ROWS if r[0] not in ("P007", "P008")]  # disease_b: P006 only
    fails_before_any_job(
        planner,
        tmp_path,
        scrna_config(tmp_path, rows),
        "class 'disease_b' has 1 target patient but splits.n_folds=2 needs",
    )


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("healthy", "dataset 'user' has no external-cohort patient of that class to learn its recipe from"),
        ("helthy", "scenarios.missing_class.classes has ['helthy'], which is no dataset's class"),
    ],
)
def test_missing_class_without_an_external_patient_of_that_class(planner, tmp_path, missing, message):
    scenarios = {"full": True, "missing_class": {"classes": [missing]}}
    fails_before_any_job(planner, tmp_path, scrna_config(tmp_path, scenarios=scenarios), message)


@pytest.mark.parametrize(
    ("patch", "messages"),
    [
        ({"mil": {"epochs": -1}}, ["-1 is less than the minimum of 1", "On instance['mil']['epochs']"]),
        ({"gmm": {"n_components": 0}}, ["0 is less than the minimum of 1", "On instance['gmm']['n_components']"]),
        ({"gmm": {"n_components": [4, 0]}}, ["0 is less than the minimum of 1", "instance['gmm']['n_components'][1]"]),
    ],
)
def test_config_values_out_of_range(planner, tmp_path, patch, messages):
    fails_before_any_job(planner, tmp_path, scrna_config(tmp_path, **patch), "Error validating config file", *messages)


# ----------------------------------------------------------------------------------------------
# ... else in the job that reads the data: the error names the file or patient, no output is left
# ----------------------------------------------------------------------------------------------


def run_jobs(work: Path, config: dict, *targets: str) -> subprocess.CompletedProcess:
    cfg = write_config(work, config)
    return snakemake(work, "--configfile", str(cfg), "--cores", "2", "--keep-going", *CI_PROFILE, *targets)


def no_output_left(work: Path, *outputs: str) -> None:
    """The failed job's outputs are absent, so a rerun redoes them, and no temporary file is left either."""
    for o in outputs:
        assert not (work / o).exists(), o
    _, leftovers = result_files(work) if (work / "results").exists() else ([], [])
    assert not leftovers, leftovers


def test_nan_in_a_bag_names_the_file_and_keeps_the_other_bags(tmp_path):
    config, sheet = bags_config(tmp_path)
    bad = Path(sheet.at[2, "path"])
    with h5py.File(bad, "r+") as f:
        f["features"][3, 1] = np.nan
        f["features"][7, 0] = np.inf
    bags = [f"results/user_bags/bags/{p}.h5" for p in sheet["patient"]]
    res = run_jobs(tmp_path, config, *bags)
    assert res.returncode != 0
    log = (tmp_path / "logs/user_bags/import_bag/healthy_02.log").read_text()
    assert f"{bad}: 2 instances have NaN or Inf features" in log
    for p, path in zip(sheet["patient"], bags, strict=True):
        assert (tmp_path / path).exists() == (p != "healthy_02")
    no_output_left(tmp_path, "results/user_bags/bags/healthy_02.h5")


def test_scrna_patient_with_zero_cells_after_qc_names_the_patient_and_file(tmp_path):
    adata = simulate_scrna_cohort(ScrnaSimParams(n_patients_per_class=3, n_genes=100, cells_per_patient_mean=90))
    x = adata.X.toarray()
    x[(adata.obs["patient"] == "P002").to_numpy(), 5:] = 0  # 5 genes per cell < min_genes
    adata.X = x
    write_h5ad_atomic(adata, tmp_path / "cohort.h5ad")
    config = scrna_config(tmp_path)
    config["datasets"]["user"]["scrna"] = {"min_genes": 20, "n_top_genes": 50, "n_pcs": 5}
    bags = [f"results/user/bags/{p}.h5" for p, _ in GOOD_ROWS]
    res = run_jobs(tmp_path, config, *bags)
    assert res.returncode != 0
    log = (tmp_path / "logs/user/embed_scrna.log").read_text()
    assert f"target cohort ({tmp_path / 'cohort.h5ad'}): patient(s) ['P002'] have zero cells after QC" in log
    assert "min_genes=20" in log
    # one job embeds the whole cohort (the PCA is fitted on every patient): no bag at all is written
    assert not (tmp_path / "results/user/bags").exists() or not list((tmp_path / "results/user/bags").iterdir())
    no_output_left(tmp_path, *bags)


def test_flow_file_with_no_event_left_after_qc_names_the_file(tmp_path):
    from recipe_mil.embed.flow import read_fcs
    from recipe_mil.simulate.flow import FlowSimParams, simulate_flow_cohort, write_fcs_file

    sheet = simulate_flow_cohort(
        FlowSimParams(n_patients_per_class=2, events_mean=300, events_sd=10, min_events=200), tmp_path / "fcs"
    )
    sheet.to_csv(tmp_path / "flow.tsv", sep="\t", index=False)
    bad = Path(sheet.at[0, "path"])
    header, events = read_fcs(bad)
    spill = {k: v for k, v in header.metadata.items() if k in ("spillover", "spill")}
    write_fcs_file(bad, np.full_like(events, np.nan), header.pnn, header.pns, keywords=spill)
    config = {
        "datasets": flow_user_dataset(tmp_path / "flow.tsv"),
        "splits": {"n_folds": 2},
    }
    patient = sheet.at[0, "patient"]
    res = run_jobs(tmp_path, config, f"results/user_flow/bags/{patient}.h5")
    assert res.returncode != 0
    log = (tmp_path / f"logs/user_flow/embed_flow/{patient}.log").read_text()
    assert f"{bad}: no event left after QC ({events.shape[0]} non finite" in log
    no_output_left(tmp_path, f"results/user_flow/bags/{patient}.h5")


def test_corrupt_image_is_skipped_by_default_and_fails_in_strict_mode(tmp_path):
    from recipe_mil.simulate.image import ImageSimParams, simulate_image_cohort

    params = ImageSimParams(
        n_patients_per_class=2, crops_per_patient_mean=6, crops_per_patient_sd=0, min_crops_per_patient=5
    )
    sheet = simulate_image_cohort(params, tmp_path / "crops")
    sheet.to_csv(tmp_path / "smear.tsv", sep="\t", index=False)
    folder = Path(sheet.at[0, "path"])
    crops = sorted(folder.iterdir())
    crops[1].write_bytes(crops[1].read_bytes()[:40])  # a truncated PNG
    ds = {"modality": "image", "classes": list(params.classes), "samples": str(tmp_path / "smear.tsv")}
    # the same sheet twice, as two datasets: the default, and image.strict (both in one run, one job each)
    config = {"datasets": {"smear": ds, "strict": {**ds, "image": {"strict": True}}}, "splits": {"n_folds": 2}}
    patient = sheet.at[0, "patient"]
    res = run_jobs(tmp_path, config, f"results/smear/bags/{patient}.h5", f"results/strict/bags/{patient}.h5")
    assert res.returncode != 0

    assert f"{crops[1]}: cannot read image" in (tmp_path / "logs/strict/embed_image/batch0.log").read_text()
    no_output_left(tmp_path, f"results/strict/bags/{patient}.h5")

    text = (tmp_path / "logs/smear/embed_image/batch0.log").read_text()  # one job: every patient of the sheet
    assert f"{crops[1]}: skipping unreadable image" in text and "skipped 1 unreadable file(s)" in text
    written = read_bag(tmp_path / f"results/smear/bags/{patient}.h5")
    assert len(written.instance_ids) == len(crops) - 1 and crops[1].name not in set(written.instance_ids)
