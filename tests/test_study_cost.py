"""benchmarks/study_cost.py: job counts from a dry run's table, CPU seconds per job, scaling to the target config."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("study_cost", REPO / "benchmarks" / "study_cost.py")
study_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study_cost)

DRY_RUN = """Building DAG of jobs...
Job stats:
job                        count
-----------------------  -------
all                            1
recipes                        4
train_mil_full                 6
train_mil_low_data            12
total                         23
"""


def _bench(run: Path, rel: str, cpu: float) -> None:
    path = run / "logs" / "benchmarks" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{cpu * 2}\t0:00:01\t100\t{cpu}\n")


def _config(per_class: int, synthetic: int, low: list[int], epochs: int) -> dict:
    sim = {"n_patients_per_class": per_class, "external": {"classes": ["a"], "n_patients_per_class": 2}}
    return {
        "datasets": {"d": {"classes": ["a", "b"], "simulate": sim}},
        "scenarios": {"low_data": {"n_per_class": low}},
        "generate": {"n_per_class": synthetic},
        "mil": {"epochs": epochs},
    }


def test_job_counts_read_the_dry_run_table(tmp_path):
    saved = tmp_path / "jobs.txt"
    saved.write_text(DRY_RUN)
    assert study_cost.job_counts(Path("unused.yaml"), saved) == {
        "all": 1,
        "recipes": 4,
        "train_mil_full": 6,
        "train_mil_low_data": 12,
    }


def test_costs_are_scaled_by_bags_and_epochs(tmp_path):
    run = tmp_path / "run"
    _bench(run, "d/full/r0f0/train_mil_s0.tsv", 10.0)
    _bench(run, "d/full/r0f0/train_mil_s1.tsv", 14.0)
    _bench(run, "d/low_data-n2-d0/r0f0/train_mil_s0.tsv", 3.0)
    _bench(run, "d/full/r0f0/recipes.tsv", 2.0)
    costs = study_cost.measured_costs(run)
    assert sorted(zip(costs.family, costs.kind, costs.cpu_s, strict=True)) == [
        ("recipes", "full", 2.0),
        ("train_mil", "full", 10.0),
        ("train_mil", "full", 14.0),
        ("train_mil", "low_data", 3.0),
    ]
    measured = _config(per_class=10, synthetic=10, low=[2], epochs=100)
    target = _config(per_class=40, synthetic=20, low=[2, 4, 8, 16], epochs=200)
    counts = {"recipes": 4, "train_mil_full": 6, "train_mil_low_data": 12}
    table = study_cost.estimate(counts, costs, target, measured).set_index("rule")
    # patients per dataset: 2 x 10 + 2 = 22 measured, 2 x 40 + 2 = 82 target
    assert table.loc["recipes", "scale"] == pytest.approx(82 / 22)
    # full training: (patients + synthetic) ratio, times the epoch cap ratio; per job the mean of the two seeds
    assert table.loc["train_mil_full", "cpu_s_per_job"] == pytest.approx(12.0)
    assert table.loc["train_mil_full", "scale"] == pytest.approx((82 + 20) / (22 + 10) * 2)
    # low data: (mean real per class + synthetic) ratio = (7.5 + 20) / (2 + 10), times 2 for epochs
    assert table.loc["train_mil_low_data", "scale"] == pytest.approx(27.5 / 12 * 2)
    assert table.cpu_s.sum() == pytest.approx(4 * 2.0 * 82 / 22 + 6 * 12.0 * 102 / 32 * 2 + 12 * 3.0 * 27.5 / 12 * 2)
