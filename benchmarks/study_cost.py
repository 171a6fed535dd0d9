"""Cost model of a study: the workflow's own job counts times CPU seconds per job measured in a finished run.

Usage (from the repository root)::

    python benchmarks/study_cost.py config/benchmark.yaml --measured /path/to/finished/run \
        [--measured-config config/config.yaml] [--cores 2] [--jobs saved_dry_run.txt]

``--measured`` is the folder of a finished run (the demo run from the repository root is one): its ``logs/benchmarks/``
holds one Snakemake benchmark TSV per job, whose ``cpu_time`` (CPU seconds of the job's processes) is the cost
measure. Unlike wall time, CPU seconds barely change with the machine's load, so a run measured while other work
shared the cores still gives a usable per-job cost. The target config's jobs are counted by ``snakemake --dry-run
--quiet rules`` (the workflow's own DAG; for a large study this dry run takes minutes; ``--jobs`` reads a saved
output of it instead).

A job's cost grows with its data, so each measured per-job cost is scaled to the target config:

* embedding and other per-dataset or per-fold jobs: by the ratio of patients per dataset (target cohort plus
  external cohort) between the target and the measured config; training and generation jobs of ``full`` and
  ``missing_class`` folds by the ratio of (patients per dataset + synthetic patients per class);
* ``low_data`` jobs: by the ratio of (real training patients per class + synthetic patients per class);
* training jobs: also by the ratio of the ``mil.epochs`` caps (early stopping makes this an upper bound);
* realism jobs: plus the extra permutations' cost, timed here on random bag means of the study's shape (the
  closed-form C2ST makes a permutation cost about a millisecond, so this term is small);
* per-patient jobs (``embed_flow``, ``import_bag``) are not scaled; image batches by patients per batch job.

The scaling is linear in bags: an assumption, printed with the result. The estimate is CPU seconds divided by the
cores (the workflow keeps both cores busy only while two jobs are ready, so wall time is longer); it is an estimate,
not a measurement.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("full", "low_data", "missing_class")
BENCHMARKS = Path("logs") / "benchmarks"  # where the rules' benchmark: files go
# benchmark folders with one TSV per patient, batch or scenario: the folder names the rule family
PER_ITEM_DIRS = {
    "embed_flow": "embed_flow",
    "import_bag": "import_bag",
    "embed_image": "embed_image",
    "plots": "plot_fold",
}
# rule families with one job per patient: their cost does not grow with the cohort
PER_PATIENT = {"embed_flow", "import_bag"}


def job_counts(config: Path, saved: Path | None) -> dict[str, int]:
    """Jobs per rule of ``config`` from Snakemake's dry run (``--quiet rules``)."""
    if saved is not None:
        text = saved.read_text()
    else:
        with tempfile.TemporaryDirectory() as work:
            cmd = [
                sys.executable,
                "-m",
                "snakemake",
                "--dry-run",
                "--quiet",
                "rules",
                "-s",
                str(ROOT / "Snakefile"),
                "--directory",
                work,
                "--configfile",
                str(config.resolve()),
                "--config",
                "console=snakemake",
            ]
            text = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    counts: dict[str, int] = {}
    table = text.split("Job stats:", 1)[-1].split("\ntotal", 1)[0]
    for line in table.splitlines():
        m = re.fullmatch(r"\s*([A-Za-z_][\w]*)\s+(\d+)\s*", line)
        if m and m.group(1) != "job":
            counts[m.group(1)] = int(m.group(2))
    if not counts:
        raise SystemExit(f"no job counts found in the dry run of {config}:\n{text[-2000:]}")
    return counts


def measured_costs(run: Path, since: float | None = None) -> pd.DataFrame:
    """One row per measured job: family (rule without seed/batch suffix), scenario kind, dataset, CPU seconds.

    ``since`` (a Unix time) keeps only the jobs whose benchmark file was written from then on: the jobs of one attempt
    in a folder that earlier attempts or other parts also ran in.
    """
    rows = []
    for tsv in sorted((run / BENCHMARKS).rglob("*.tsv")):
        if since is not None and tsv.stat().st_mtime < since:
            continue
        rel = tsv.relative_to(run / BENCHMARKS).parts
        family = PER_ITEM_DIRS.get(rel[-2], re.sub(r"_s\d+$", "", tsv.stem)) if len(rel) > 1 else tsv.stem
        kind = next((k for k in KINDS if any(p.startswith(k) for p in rel)), "dataset")
        cpu = float(pd.read_csv(tsv, sep="\t")["cpu_time"].iloc[0])
        rows.append({"family": family, "kind": kind, "dataset": rel[0] if len(rel) > 1 else "", "cpu_s": cpu})
    if not rows:
        raise SystemExit(f"no benchmark TSVs under {run / BENCHMARKS}: is it a finished run?")
    return pd.DataFrame(rows)


def _sizes(cfg: dict) -> dict[str, float]:
    """Mean bags per dataset and the per-class numbers the scaling uses."""
    per_dataset = []
    for ds in cfg["datasets"].values():
        sim = ds.get("simulate", {})
        n = sim.get("n_patients_per_class", 10) * len(ds["classes"])
        ext = sim.get("external", {})
        n += ext.get("n_patients_per_class", 0) * len(ext.get("classes", []))
        per_dataset.append(n)
    low = cfg.get("scenarios", {}).get("low_data", {}) or {}
    n_low = low.get("n_per_class", [2]) if isinstance(low, dict) else [2]
    return {
        "patients": sum(per_dataset) / len(per_dataset),
        "synthetic": float(cfg.get("generate", {}).get("n_per_class", 10)),
        "low_real": sum(n_low) / len(n_low),
        "epochs": float(cfg.get("mil", {}).get("epochs", 150)),
        "permutations": float(cfg.get("realism", {}).get("c2st_permutations", 0)),
        "classes": sum(len(ds["classes"]) for ds in cfg["datasets"].values()) / len(cfg["datasets"]),
        "methods": float(len(cfg.get("methods", [])) or 10),
    }


def c2st_seconds(permutations: int, n_synthetic: int, n_heldout: int, width: int = 30, repeats: int = 5) -> float:
    """Seconds of one :func:`recipe_mil.realism.c2st` with ``permutations`` on random bag means (timed here)."""
    import time

    import numpy as np

    from recipe_mil.realism import c2st

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n_synthetic, width)), rng.normal(size=(max(n_heldout, 2), width))
    start = time.perf_counter()
    for i in range(repeats):
        c2st(x, y, permutations=permutations, seed=i)
    return (time.perf_counter() - start) / repeats


def rule_family(rule: str) -> tuple[str, str | None]:
    """Rule name -> (measured family, scenario kind or None for any)."""
    for kind in KINDS:
        for fam in ("train_mil", "generate"):
            if rule == f"{fam}_{kind}":
                return fam, kind
    if rule.startswith("embed_image"):
        return "embed_image", None
    if rule.startswith("embed_scrna"):
        return "embed_scrna", None
    return rule, None


def estimate(counts: dict[str, int], costs: pd.DataFrame, target: dict, measured: dict) -> pd.DataFrame:
    """Per rule: jobs, measured CPU s per job, scale factor, estimated CPU s."""
    t, m = _sizes(target), _sizes(measured)
    out = []
    for rule, n in sorted(counts.items()):
        fam, kind = rule_family(rule)
        sel = costs[(costs.family == fam) & ((costs.kind == kind) if kind else True)]
        if sel.empty:
            sel = costs[costs.family == fam]
        per_job = float(sel.cpu_s.mean()) if not sel.empty else float("nan")
        if kind == "low_data":
            scale = (t["low_real"] + t["synthetic"]) / (m["low_real"] + m["synthetic"])
        else:
            scale = t["patients"] / m["patients"]
            if fam in ("train_mil", "generate"):
                scale = (t["patients"] + t["synthetic"]) / (m["patients"] + m["synthetic"])
        if fam in PER_PATIENT:
            scale = 1.0
        if fam == "embed_image":  # patients per batch job
            n_batches = sum(v for k, v in counts.items() if k.startswith("embed_image"))
            scale *= max(int((costs.family == "embed_image").sum()), 1) / max(n_batches, 1)
        if fam == "train_mil":
            scale *= t["epochs"] / m["epochs"]
        cpu_s = n * per_job * scale
        if fam == "realism" and t["permutations"] != m["permutations"]:
            # one C2ST per class and method (and the class's reference): the permutations' extra cost, timed here
            n_held = int(t["patients"] / t["classes"] / 5)
            extra = c2st_seconds(int(t["permutations"]), int(t["synthetic"]), n_held) - c2st_seconds(
                int(m["permutations"]), int(t["synthetic"]), n_held
            )
            cpu_s += n * extra * t["classes"] * (t["methods"] + 1)
        out.append({"rule": rule, "jobs": n, "cpu_s_per_job": per_job, "scale": scale, "cpu_s": cpu_s})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--measured", type=Path, required=True)
    ap.add_argument("--measured-config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--jobs", type=Path, default=None, help="saved output of `snakemake -n --quiet rules`")
    args = ap.parse_args(argv)
    target = yaml.safe_load(args.config.read_text())
    measured = yaml.safe_load(args.measured_config.read_text())
    costs = measured_costs(args.measured)
    table = estimate(job_counts(args.config, args.jobs), costs, target, measured)
    pd.set_option("display.width", 200)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    total = float(table.cpu_s.sum())
    trainings = int(table.loc[table.rule.str.startswith("train_mil"), "jobs"].sum())
    print(f"measured: {len(costs)} jobs in {args.measured}, {costs.cpu_s.sum():.0f} CPU s")
    print(f"target: {int(table.jobs.sum())} jobs, {trainings} MIL training jobs (each trains every method of a fold)")
    print("assumption: cost linear in bags per job (patients, synthetic patients, epoch cap); not a measurement")
    print(f"study_cpu_hours: {total / 3600:.1f}")
    print(f"study_hours_on_{args.cores}_cores: {total / 3600 / args.cores:.1f}")


if __name__ == "__main__":
    main()
