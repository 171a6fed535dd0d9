"""Demo cohorts with a known ground truth (see ``docs/method.md``)."""

from recipe_mil.simulate.scrna import (
    TRUTH_KEY,
    ScrnaSimParams,
    class_mean_proportions,
    cohort_design,
    external_params,
    simulate_scrna_cohort,
    write_h5ad_atomic,
)

__all__ = [
    "TRUTH_KEY",
    "ScrnaSimParams",
    "class_mean_proportions",
    "cohort_design",
    "external_params",
    "simulate_scrna_cohort",
    "write_h5ad_atomic",
]
