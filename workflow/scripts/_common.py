"""Shared start-up for rule scripts: make the workflow's own ``src/`` importable and send logging to the rule's log.

The library is found next to this file (``../../src``), so a rule needs no pip install of recipe-mil, also inside a
per-rule conda environment (which brings the third-party packages) and when the workflow is a Snakemake module: a
local module has its ``src/`` on disk; for a remote one (``github(...)``) ``workflow/rules/common.smk`` extracts
``src/`` beside the fetched copy of this file.
"""

import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files: no job opens a window (recipe_mil.plots)

SRC = Path(__file__).resolve().parents[2] / "src"
if (SRC / "recipe_mil").is_dir():
    if str(SRC) in sys.path:
        sys.path.remove(str(SRC))
    sys.path.insert(0, str(SRC))  # first: this workflow's copy wins over an installed recipe-mil


import recipe_mil  # noqa: E402
from recipe_mil.console import summary_line  # noqa: E402

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def limit_threads(threads: int) -> None:
    """Give the job's numerical libraries the rule's ``threads``, no more.

    Without a limit every job's BLAS, OpenMP and numba pools take every core, so two jobs on two cores each run
    four threads and wait on each other (the demo's realism jobs spent half their wall time so). The variables are
    read when numpy, sklearn or numba load, which is after this call: rule scripts call :func:`start` first.
    """
    for var in THREAD_VARIABLES:
        os.environ[var] = str(threads)


def start(snakemake) -> logging.Logger:
    """Log everything to ``snakemake.log[0]``, warnings and errors also to stderr; return the rule's logger.

    Progress (per-epoch lines, tables) stays in the log file; the console shows one line per finished job, built
    by ``recipe_mil.console.CompactConsole`` from the job's :func:`done` line.
    """
    limit_threads(int(getattr(snakemake, "threads", 1) or 1))
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    handlers: list[logging.Handler] = [console]
    if snakemake.log:
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(
        level=logging.INFO, handlers=handlers, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.captureWarnings(True)
    logger = logging.getLogger(f"recipe_mil.rule.{snakemake.rule}")

    def hook(exc_type, exc, tb):
        logger.error("rule %s failed: %s", snakemake.rule, exc, exc_info=(exc_type, exc, tb))

    sys.excepthook = hook
    logger.info("recipe_mil %s from %s", recipe_mil.__version__, Path(recipe_mil.__file__).parent)
    if "numpy" in sys.modules:  # loaded before start(): the thread variables came too late for it
        logger.info("numpy was loaded before the thread limit of %s", os.environ["OMP_NUM_THREADS"])
    return logger


def done(log: logging.Logger, message: str, *args) -> None:
    """Log the job's summary line (its key figure), shown on the console when the job finishes."""
    log.info(summary_line(message), *args)
