"""The workflow used the way Snakemake users reuse workflows: snakedeploy, and a hand-written ``module``.

Both tests run from a git snapshot of the working tree (tracked and untracked-but-not-ignored files, committed and
tagged in a temporary repository), never from the checkout itself, and both run the Snakemake process with this
repository's ``src/`` removed from ``sys.path``: the test environment has recipe-mil installed in editable mode,
so without that the library would be found even if the workflow did not put its own ``src/`` on the path. The
rule scripts of the jobs that really run log which ``recipe_mil`` they imported; the tests check that it is the
deployed module's copy.

snakedeploy 0.17's local-path provider writes ``snakefile: "workflow/Snakefile"`` relative to the deploying
project (a module that cannot be found), so the deployment test uses the GitHub provider, as users do, with git's
``url.<base>.insteadOf`` pointing ``https://github.com/`` at a local folder: snakedeploy's clone and Snakemake's
``github(...)`` source both read the snapshot, offline.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recipe_mil.simulate.bags import simulate_bag_cohort

REPO = Path(__file__).resolve().parents[1]
OWNER_REPO = "recipe-mil/recipe-mil"
TAG = "v0.1.0"

# Snakemake with this repository's src/ off sys.path: recipe_mil is importable only if the workflow adds its own
LAUNCHER = """
import importlib.util, sys
from pathlib import Path
src = Path(sys.argv.pop(1)).resolve()
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != src]
assert importlib.util.find_spec("recipe_mil") is None, "recipe_mil is still importable"
from snakemake.cli import main
sys.exit(main())
"""


def git_env(tmp: Path) -> dict[str, str]:
    """An environment whose git reads https://github.com/<owner>/<name> from ``tmp/mirror/<owner>/<name>``."""
    config = tmp / "gitconfig"
    config.write_text(
        f'[url "file://{tmp / "mirror"}/"]\n\tinsteadOf = https://github.com/\n'
        "[user]\n\tname = recipe-mil tests\n\temail = tests@recipe-mil.invalid\n"
        "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1", XDG_CACHE_HOME=str(tmp / "cache"))
    return env


def snapshot(dest: Path, env: dict[str, str]) -> Path:
    """Copy the working tree's project files into a new git repository at ``dest``, committed and tagged."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO, capture_output=True
    )
    if listed.returncode != 0:
        pytest.skip("the repository is not a git work tree")
    for rel in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "snapshot"], ["tag", TAG]):
        subprocess.run(["git", *args], cwd=dest, env=env, check=True, capture_output=True)
    return dest


def bags_config(work: Path) -> dict:
    """A tiny ``bags`` dataset (written under ``work``) with an external cohort, two scenarios, three methods."""
    target, _ = simulate_bag_cohort(work / "bags", n_per_class=4, dim=4, size_range=(20, 40), seed=3)
    external, _ = simulate_bag_cohort(
        work / "bags",
        class_proportions={"healthy": [0.45, 0.30, 0.15, 0.05, 0.05]},
        n_per_class=2,
        dim=4,
        size_range=(20, 40),
        cohort="external",
        prefix="X",
        seed=3,
    )
    sheet = work / "samples.tsv"
    pd.concat([target, external]).to_csv(sheet, sep="\t", index=False)
    return {
        "seed": 1,
        "datasets": {"cohort": {"modality": "bags", "classes": ["healthy", "disease"], "samples": str(sheet)}},
        "splits": {"n_folds": 2},
        "scenarios": {"full": True, "missing_class": {"classes": ["healthy"]}},
        "methods": ["real_only", "real_external", "recipe"],
        "gmm": {"n_components": [2, 3], "n_init": 1},
        "generate": {"n_per_class": 2},
        "mil": {
            "epochs": 2,
            "min_epochs": 1,
            "patience": 1,
            "hidden": 8,
            "attention_dim": 4,
            "device": "cpu",
            "n_seeds": 1,
        },
    }


# dataset x (full, missing_class) x 2 folds; 8 target + 2 external bags
EXPECTED_JOBS = {
    "import_bag": 10,
    "bag_index": 1,  # one index of the bag files per dataset
    "splits": 1,
    "scenario_patients": 4,
    "recipes": 4,
    "generate_full": 2,  # generation and training: one rule per scenario family
    "generate_missing_class": 2,
    "realism": 4,
    "train_mil_full": 2,
    "train_mil_missing_class": 2,
    "plot_fold": 2,
    "summary": 1,
    "all": 1,
}


def snakemake(work: Path, env: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run Snakemake in ``work`` without this repository's ``src/`` on ``sys.path``."""
    cmd = [sys.executable, "-c", LAUNCHER, str(REPO / "src"), *args]
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)


def planned_jobs(output: str) -> dict[str, int]:
    """The "Job stats" table of a dry run: rule -> number of jobs."""
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)}


def library_of(log: Path) -> Path:
    """The ``recipe_mil`` package a rule script imported, from the line ``_common.start`` writes to its log."""
    m = re.search(r"recipe_mil \S+ from (.+)$", log.read_text(), flags=re.M)
    assert m, log.read_text()[-2000:]
    return Path(m.group(1).strip())


def test_snakedeploy_from_github_url_runs_without_installing_the_library(tmp_path):
    pytest.importorskip("snakedeploy")
    env = git_env(tmp_path)
    source = snapshot(tmp_path / "mirror" / OWNER_REPO, env)
    dest = tmp_path / "my-project"
    deploy = subprocess.run(
        [sys.executable, "-c", "import sys; from snakedeploy.client import main; sys.exit(main())"]
        + ["deploy-workflow", f"https://github.com/{OWNER_REPO}", str(dest), "--tag", TAG],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deploy.returncode == 0, deploy.stderr
    module = (dest / "workflow/Snakefile").read_text()
    assert f'github("{OWNER_REPO}", path="workflow/Snakefile", tag="{TAG}")' in module
    assert "use rule * from recipe_mil" in module
    assert (dest / "LICENSE").read_text() == (source / "LICENSE").read_text()
    assert (dest / "profiles/default/config.yaml").is_file()
    assert (dest / "config/config.yaml").read_text() == (source / "config/config.yaml").read_text()
    (dest / "config/config.yaml").write_text(yaml.safe_dump(bags_config(dest)))

    dry = snakemake(dest, env, "-n")
    assert dry.returncode == 0, dry.stderr[-5000:]
    assert planned_jobs(dry.stdout + dry.stderr) == {**EXPECTED_JOBS, "total": sum(EXPECTED_JOBS.values())}

    run = snakemake(dest, env, "--cores", "1", "results/cohort/splits.tsv")
    assert run.returncode == 0, run.stderr[-5000:]
    used = library_of(dest / "logs/cohort/splits.log")
    # Snakemake's copy of the module at the tag, extracted by common.smk into its source cache, not this checkout
    assert used.is_relative_to(tmp_path / "cache") and f"/{TAG}/src/recipe_mil" in str(used)
    assert (used / "console.py").read_bytes() == (source / "src/recipe_mil/console.py").read_bytes()


def test_module_with_rule_prefix_keeps_local_rules_local(tmp_path):
    """``use rule * from recipe_mil as rm_*``: a local module path, prefixed rule names, local rules stay local.

    Local rules are observed where it matters, under a cluster executor (a dry run never says which jobs are
    local): with ``--executor slurm`` a local rule runs in the Snakemake process, any other rule is submitted.
    ``sbatch`` and ``sacct`` on ``PATH`` are fakes that record a call and fail, and no cluster runs here, so the
    local rules' targets must build without any SLURM call, and a non-local rule's target must fail to submit
    (the control that shows the executor was really in force).
    """
    pytest.importorskip("snakemake_executor_plugin_slurm")
    env = git_env(tmp_path)
    source = snapshot(tmp_path / "clone", env)
    work = tmp_path / "project"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(bags_config(work)))
    (work / "Snakefile").write_text(
        'configfile: "config.yaml"\n\n\n'
        f'module recipe_mil:\n    snakefile:\n        "{source}/workflow/Snakefile"\n    config:\n        config\n\n\n'
        "use rule * from recipe_mil as rm_*\n"
    )
    dry = snakemake(work, env, "-n")
    assert dry.returncode == 0, dry.stderr[-5000:]
    assert planned_jobs(dry.stdout + dry.stderr) == {
        **{f"rm_{rule}": n for rule, n in EXPECTED_JOBS.items()},
        "total": sum(EXPECTED_JOBS.values()),
    }
    assert "localrules directive specifies rules that are not present" not in dry.stdout + dry.stderr

    fake = tmp_path / "fake-slurm"
    fake.mkdir()
    for tool in ("sbatch", "sacct"):
        (fake / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/slurm-calls.txt"\nexit 1\n')
        (fake / tool).chmod(0o755)
    slurm_env = {**env, "PATH": f"{fake}{os.pathsep}{env['PATH']}"}
    cluster = ("--executor", "slurm", "--jobs", "1", "--slurm-init-seconds-before-status-checks", "1")
    calls = tmp_path / "slurm-calls.txt"

    local = snakemake(work, slurm_env, *cluster, "results/cohort/full/r0f0/patients.tsv")
    assert local.returncode == 0, local.stderr[-5000:]
    assert not calls.exists(), calls.read_text()
    assert (work / "results/cohort/splits.tsv").is_file()
    assert library_of(work / "logs/cohort/full/r0f0/scenario_patients.log") == source / "src/recipe_mil"

    remote = snakemake(work, slurm_env, *cluster, "results/cohort/bags/healthy_00.h5")
    assert remote.returncode != 0
    assert "Error in rule rm_import_bag" in remote.stderr and "Job submission failed" in remote.stderr
