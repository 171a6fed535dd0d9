"""Fixtures shared by test modules."""

import pytest

from test_workflow import TINY, run_to_end


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One end-to-end run on a simulated scRNA dataset: every scenario and method.

    Session-scoped so that tests/test_workflow.py and tests/test_report.py (the report in a browser) share one run.
    """
    work = tmp_path_factory.mktemp("tiny")
    cfg, res = run_to_end(work, TINY)
    return work, cfg, res
