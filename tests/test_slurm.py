"""The SLURM profile on a real one-node SLURM cluster (Debian's slurm-wlm and munge, started on localhost).

The test starts munged, slurmctld and slurmd with a throw-away configuration, runs a tiny workflow through
`--workflow-profile profiles/slurm` (the profile as shipped, only the status-query settings that a cluster without
accounting needs are added on the command line), checks its results and that every job went through SLURM to the
partition the profile names, and stops every daemon it started, also when the test fails. The node offers a pretend
GPU (a `gpu` gres backed by /dev/null) so that the profile's `--gpus=1` requests are accepted; training runs on CPU.
It skips, saying why, where the SLURM or munge binaries, the executor plugin or root are missing.
"""

import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from test_workflow import TINY

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
# status checks: the first one 2 s after a submission; squeue forgets a finished job after MinJobAge (>= 3x that)
INIT_SECONDS = 2
MIN_JOB_AGE = 300
WORKFLOW_TIMEOUT = 420

TINY_SLURM = {  # test_workflow's tiny scRNA config, cut down to what a SLURM round trip needs
    **TINY,
    "datasets": {
        "tiny_scrna": {
            **TINY["datasets"]["tiny_scrna"],
            "simulate": {**TINY["datasets"]["tiny_scrna"]["simulate"], "cells_per_patient_mean": 100},
        }
    },
    "scenarios": {"full": True},
    "methods": ["real_only", "recipe"],
    "gmm": {"n_components": [3], "n_init": 1},
    "generate": {"n_per_class": 3},
    "select": {"passes": 2, "oversample": 2},
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


def asks_gpu(rule: str) -> bool:
    """Whether a rule of the tiny scRNA workflow declares resources: gpu=1 (the training rules, one per family)."""
    return rule.startswith("train_mil_")


def profile_resource(rule: str, name: str, attempt: int = 1):
    """A resource of a rule's job as the SLURM profile sets it (its expressions evaluated for an attempt)."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    value = profile.get("set-resources", {}).get(rule, {}).get(name, profile["default-resources"][name])
    return eval(value, {"__builtins__": {}}, {"attempt": attempt}) if name in ("mem_mb", "runtime") else value


def profile_partitions() -> dict[str, int]:
    """The partitions of the profile's partition file, with the GPUs a job may ask for in each."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    partitions = yaml.safe_load((PROFILE / profile["slurm-partition-config"]).read_text())["partitions"]
    return {name: int(limits.get("max_gpu", 0)) for name, limits in partitions.items()}


def expected_partition(gpu: bool) -> str:
    """The partition the profile means for a job with or without a GPU (the first of that kind in the file)."""
    return next(name for name, max_gpu in profile_partitions().items() if (max_gpu > 0) == gpu)


def _missing_requirements() -> str | None:
    missing = [b for b in BINARIES if shutil.which(b, path=SEARCH_PATH) is None]
    if missing:
        packages = "slurmctld slurmd slurm-client munge"
        return f"SLURM/munge binaries not found: {', '.join(missing)} (apt-get install {packages})"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    if os.geteuid() != 0:
        return "starting munged and slurmd needs root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (the munge package creates it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def _slurm_conf(base: Path, node: str) -> str:
    """A one-node cluster: no accounting database, no cgroups, memory not consumable, the profile's partitions."""
    cpus, mem = os.cpu_count() or 1, _mem_total_mb() * 9 // 10
    cpu_partition, gpu_partition = expected_partition(gpu=False), expected_partition(gpu=True)
    return f"""\
ClusterName=recipetest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
AuthInfo=socket={base}/munge/munge.socket
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge={MIN_JOB_AGE}
EnforcePartLimits=ALL
SchedulerParameters=sched_min_interval=200000
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} Gres=gpu:1 State=UNKNOWN
PartitionName={cpu_partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName={gpu_partition} Nodes=ALL MaxTime=INFINITE State=UP
"""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _logs(base: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(base.glob("log/*")))


@pytest.fixture(scope="module")
def slurm_cluster():
    """Start munged, slurmctld and slurmd on localhost; yield the environment that reaches them; stop them all."""
    reason = _missing_requirements()
    if reason:
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="recipe-slurm-"))
    base.chmod(0o755)  # munged, running as munge, reaches its folder through this one
    munge = pwd.getpwnam("munge")
    for sub in ("munge", "state", "spool", "log"):
        (base / sub).mkdir()
    key = base / "munge" / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    for path in (base / "munge", key):
        os.chown(path, munge.pw_uid, munge.pw_gid)
    node = socket.gethostname().split(".")[0]
    conf = base / "slurm.conf"
    conf.write_text(_slurm_conf(base, node))
    (base / "gres.conf").write_text("Name=gpu File=/dev/null\n")
    # snakemake-executor-plugin-slurm-jobstep (0.6.1) drops every SLURM_* variable, SLURM_CONF too, before it calls
    # srun inside a job; a cluster whose slurm.conf is not at the default path needs it back
    (base / "bin").mkdir()
    srun = base / "bin" / "srun"
    srun.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which("srun", path=SEARCH_PATH)} "$@"\n')
    srun.chmod(0o755)
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": os.pathsep.join([str(base / "bin"), SEARCH_PATH])}

    def which(name: str) -> str:
        return shutil.which(name, path=SEARCH_PATH)

    daemons: list[subprocess.Popen] = []

    def start(cmd: list[str], name: str, **kwargs) -> None:
        with open(base / "log" / f"{name}.out", "wb") as out:
            daemons.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, **kwargs))

    try:
        start(
            [
                which("munged"),
                "--foreground",
                f"--socket={base}/munge/munge.socket",
                f"--key-file={key}",
                f"--pid-file={base}/munge/munged.pid",
                f"--log-file={base}/munge/munged.log",
                f"--seed-file={base}/munge/munged.seed",
            ],
            "munged",
            user="munge",
            group="munge",
        )
        deadline = time.monotonic() + 15
        while not (base / "munge" / "munge.socket").exists():
            if time.monotonic() > deadline or daemons[0].poll() is not None:
                raise RuntimeError("munged did not start\n" + _logs(base))
            time.sleep(0.1)
        start([which("slurmctld"), "-D", "-c"], "slurmctld")
        start([which("slurmd"), "-D", "-N", node], "slurmd")
        deadline = time.monotonic() + 60
        while True:
            state = subprocess.run(
                [which("sinfo"), "-h", "-N", "-o", "%t"], env=env, capture_output=True, text=True, timeout=20
            ).stdout.split()
            if state and all(s == "idle" for s in state):
                break
            if time.monotonic() > deadline or any(d.poll() is not None for d in daemons):
                raise RuntimeError(f"the SLURM node did not come up (sinfo: {state})\n" + _logs(base))
            time.sleep(0.5)
        yield env
    finally:
        if len(daemons) == 3 and daemons[1].poll() is None:
            subprocess.run([which("scancel"), "--user=root"], env=env, capture_output=True, timeout=20)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                active = subprocess.run(
                    [which("squeue"), "-h", "-t", "pending,running,completing,configuring", "-o", "%i"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=20,
                ).stdout.split()
                if not active:
                    break
                time.sleep(0.5)
        for proc in reversed(daemons):  # slurmd, slurmctld, munged
            _stop(proc)
        shutil.rmtree(base, ignore_errors=True)


def _jobs(env: dict) -> list[dict]:
    """Every job slurmctld still remembers (finished ones for MinJobAge seconds), as key=value dicts."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], env=env, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    jobs = []
    for line in out.stdout.splitlines():
        if line.strip():
            jobs.append(dict(field.split("=", 1) for field in line.split() if "=" in field))
    return jobs


def profile_dry_run_output(workdir: Path, configfile: Path) -> str:
    """Plan every job of a config through the SLURM profile in ``workdir`` (``-F``: whatever results the folder
    already holds); return Snakemake's output."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
        + ["--configfile", str(configfile), "-n", "-F", "--workflow-profile", str(PROFILE)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout + res.stderr


def profile_dry_run(workdir: Path, configfile: Path) -> list[str]:
    """The planned jobs' blocks of :func:`profile_dry_run_output`, each starting with its rule's name (the
    members of a group job are indented, so they stay inside the group's block)."""
    return profile_dry_run_output(workdir, configfile).split("\nrule ")


def job_resources(job: str) -> dict:
    """The resources of one planned job (a block of the dry run's output), numbers as int."""
    line = next(ln for ln in job.splitlines() if ln.strip().startswith("resources:"))
    pairs = (item.split("=", 1) for item in line.split("resources:", 1)[1].strip().split(", "))
    return {k: int(v) if v.isdigit() else v for k, v in pairs}


def routed_partition(rule: str, resources: dict) -> str:
    """The partition the SLURM plugin picks for a job with these resources from the profile's partition file
    (its own selection code, as at submission; a dry run does not choose partitions)."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    partitions = read_partition_file(PROFILE / profile["slurm-partition-config"])
    job = SimpleNamespace(name=rule, resources=resources, threads=int(resources.get("cpus_per_task", 1)))
    quiet = SimpleNamespace(debug=lambda *a: None, info=lambda *a: None, warning=lambda *a: None)
    return get_best_partition(partitions, job, quiet)


def check_profile_resources(jobs: list[str]) -> None:
    """The profile's memory and runtime reach training and recipes; only training asks for a GPU, and the
    partition file sends it to the GPU partition and recipes to the CPU partition (no rule names a partition)."""
    train = next(j for j in jobs if j.startswith("train_mil_full:"))
    recipes = next(j for j in jobs if j.startswith("recipes:"))
    for job, rule in ((train, "train_mil_full"), (recipes, "recipes")):
        res = job_resources(job)
        for name in ("mem_mb", "runtime"):
            assert res[name] == profile_resource(rule, name), (rule, name)
        assert "slurm_partition" not in res, rule
        assert routed_partition(rule, res) == expected_partition(gpu=rule == "train_mil_full"), rule
    assert "gpu=1" in train and "gpu=" not in recipes


def test_slurm_profile_dry_run(tmp_path):
    """The profile parses and routes the GPU rules for the demo config (no cluster needed, only the plugin);
    planned in a temporary folder, so a finished demo in the repository root changes nothing."""
    jobs = profile_dry_run(tmp_path, REPO / "config" / "config.yaml")
    check_profile_resources(jobs)
    assert profile_resource("train_mil_full", "mem_mb", attempt=2) == 2 * profile_resource("train_mil_full", "mem_mb")
    # the demo's smear images use the CPU-only morphology encoder: no GPU, the CPU partition
    smear = [j for j in jobs if j.startswith("embed_image_demo_smear_")]
    assert len(smear) == 2  # 36 patients, 25 per job
    for job in smear:
        res = job_resources(job)
        assert "gpu" not in res and routed_partition("embed_image", res) == expected_partition(gpu=False)


def test_slurm_profile_routes_image_encoders_and_groups_per_patient_jobs(tmp_path):
    """Through the profile: image embedding asks for a GPU only with a network encoder (and lands on the GPU
    partition), morphology neither; flow embedding and bag imports, one job per patient, are planned as group
    jobs (up to 50 patients each), with the profile's small per-member resources."""
    from recipe_mil.simulate.bags import simulate_bag_cohort
    from recipe_mil.simulate.flow import FlowSimParams, simulate_flow_cohort
    from recipe_mil.simulate.image import ImageSimParams, simulate_image_cohort
    from test_workflow import flow_user_dataset

    flow = simulate_flow_cohort(
        FlowSimParams(n_patients_per_class=2, events_mean=300, events_sd=10, min_events=200), tmp_path / "fcs"
    )
    flow.to_csv(tmp_path / "flow.tsv", sep="\t", index=False)
    crops = ImageSimParams(n_patients_per_class=2, crops_per_patient_mean=5, crops_per_patient_sd=0)
    smear = simulate_image_cohort(crops, tmp_path / "crops")
    smear.to_csv(tmp_path / "smear.tsv", sep="\t", index=False)
    bags, _ = simulate_bag_cohort(tmp_path / "input_bags", n_per_class=3, dim=6, size_range=(20, 30), seed=2)
    bags.to_csv(tmp_path / "bags.tsv", sep="\t", index=False)
    (tmp_path / "vit.pth").write_bytes(b"planning only reads its name")
    image = {"modality": "image", "classes": list(crops.classes), "samples": str(tmp_path / "smear.tsv")}
    config = {
        **TINY_SLURM,
        "datasets": {
            **flow_user_dataset(tmp_path / "flow.tsv"),
            "smear": {**image, "image": {"patients_per_job": 4}},
            "vit": {**image, "image": {"encoder": "dinobloom-s", "weights": str(tmp_path / "vit.pth")}},
            "user_bags": {"modality": "bags", "classes": ["healthy", "disease"], "samples": str(tmp_path / "bags.tsv")},
        },
    }
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = profile_dry_run_output(tmp_path, cfg)
    jobs = out.split("\nrule ")

    n = len(smear)
    morph = [j for j in jobs if j.startswith("embed_image_smear_")]
    vit = [j for j in jobs if j.startswith("embed_image_vit_")]
    assert len(morph) == -(-n // 4) and len(vit) == 1  # 4 patients per job; 25 (the default) per job
    for job in morph:
        res = job_resources(job)
        assert "gpu" not in res and res["mem_mb"] == profile_resource("embed_image", "mem_mb")
        assert routed_partition("embed_image", res) == expected_partition(gpu=False)
    res = job_resources(vit[0])
    assert (res["gpu"], res["mem_mb"], res["runtime"]) == (1, 16000, 120)
    assert routed_partition("embed_image", res) == expected_partition(gpu=True)
    assert str(tmp_path / "vit.pth") in vit[0]  # the weights are an input: a new file re-embeds

    # one group job per rule holds every patient's job (50 per group); members get the profile's resources
    groups = re.findall(r"Group job (\w+) \(", out)
    assert sorted(groups) == ["embed_flow", "import_bag"]
    for rule, sheet in (("embed_flow", flow), ("import_bag", bags)):
        block = out.split(f"Group job {rule} (", 1)[1].split("\nrule ", 1)[0]
        members = re.findall(rf"^    rule {rule}:$", block, flags=re.M)
        assert len(members) == len(sheet) <= 50, rule
        member = job_resources(block.split(f"rule {rule}:", 1)[1])
        assert (member["mem_mb"], member["runtime"], member["group_slots"]) == (2000, 5, 1), rule
    assert not [j for j in jobs if j.startswith(("embed_flow:", "import_bag:"))]  # none left ungrouped


def fake_finished_run(work: Path, configfile: Path) -> None:
    """Make ``work`` look like a folder where the config ran to the end: every output exists, is newer than its
    inputs and has Snakemake's metadata (empty files, then ``--touch``), so that a plain dry run plans nothing."""
    base = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work)]
    base += ["--configfile", str(configfile)]
    dry = subprocess.run([*base, "-n"], cwd=work, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    outputs = [
        o
        for line in dry.stdout.splitlines()
        if line.strip().startswith("output:")
        for o in line.split("output:", 1)[1].strip().split(", ")
    ]
    assert outputs
    for out in outputs:
        (work / out).parent.mkdir(parents=True, exist_ok=True)
        (work / out).touch()
    touched = subprocess.run([*base, "--touch", "--cores", "1"], cwd=work, capture_output=True, text=True, timeout=300)
    assert touched.returncode == 0, touched.stderr[-3000:]
    again = subprocess.run([*base, "-n"], cwd=work, capture_output=True, text=True, timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_slurm_profile_dry_run_in_a_folder_that_holds_results(tmp_path):
    """Tests after results exist: planning in a folder with a finished run (results/, logs/, .snakemake/) still
    plans every job and checks the profile's resources (main's dry run planned nothing there and failed)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(TINY_SLURM))
    fake_finished_run(tmp_path, cfg)
    assert (tmp_path / "results" / "summary.tsv").exists() and (tmp_path / ".snakemake").is_dir()
    check_profile_resources(profile_dry_run(tmp_path, cfg))


def test_tiny_workflow_through_slurm(slurm_cluster, tmp_path):
    env = slurm_cluster
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(TINY_SLURM))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(cfg),
        "--workflow-profile",
        str(PROFILE),
        # no accounting database here: ask squeue, early and often, and use no account
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        str(INIT_SECONDS),
        "--slurm-no-account",
        "--slurm-keep-successful-logs",
    ]
    start = time.monotonic()
    try:
        res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=WORKFLOW_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the SLURM run did not finish in {WORKFLOW_TIMEOUT} s:\n{(exc.stderr or b'')[-5000:]!r}")
    print(f"SLURM workflow run: {time.monotonic() - start:.1f} s")
    assert res.returncode == 0, res.stderr[-5000:]

    summary = pd.read_csv(tmp_path / "results/summary.tsv", sep="\t")
    assert len(summary) == 2 * 2  # 2 folds x 2 methods
    assert set(summary["method"]) == {"real_only", "recipe"} and set(summary["scenario"]) == {"full"}
    assert summary["balanced_accuracy"].between(0, 1).all()

    # every job that is not a localrule went through sbatch: SLURM remembers it, it completed, it left its log
    jobs = [j for j in _jobs(env) if j.get("Comment", "").startswith("rule_")]
    rules = [j["Comment"].removeprefix("rule_").split("_wildcards_")[0] for j in jobs]
    assert all(j["JobState"] == "COMPLETED" for j in jobs), [(j["Comment"], j["JobState"]) for j in jobs]
    assert rules.count("train_mil_full") == 2 and rules.count("recipes") == 2
    assert {"simulate_scrna", "embed_scrna_tiny_scrna", "generate_full"} <= set(rules)
    assert not {"summary", "splits", "scenario_patients"} & set(rules)  # localrules run on the submit host
    logs = list((tmp_path / ".snakemake/slurm_logs").rglob("*.log"))
    assert len(logs) == len(jobs)

    # the profile's resources reached SLURM: partitions (from the partition file), memory of a first attempt, GPUs
    for job, rule in zip(jobs, rules, strict=True):
        assert job["Partition"] == expected_partition(gpu=asks_gpu(rule)), (rule, job)
        assert job["MinMemoryNode"] == f"{profile_resource(rule, 'mem_mb')}M", (rule, job)
        assert ("gpu:1" in job.get("TresPerJob", "")) == asks_gpu(rule), (rule, job)
        two = rule == "recipes" or rule.startswith("embed_scrna")  # the rules with threads: 2
        assert job["CPUs/Task"] == ("2" if two else "1"), (rule, job)  # cpus_per_task: threads
    assert len({j["Partition"] for j in jobs}) == 2
