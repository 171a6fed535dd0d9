"""Shared start-up for rule scripts: make ``src/`` importable and send logging to the rule's log."""

import logging
import sys
from pathlib import Path


def start(snakemake) -> logging.Logger:
    """Put the repository's ``src`` on ``sys.path`` and log to ``snakemake.log[0]`` (and stderr)."""
    src = Path(snakemake.scriptdir).resolve().parents[1] / "src"
    if src.is_dir() and str(src) not in sys.path:
        sys.path.insert(0, str(src))
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
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
    return logger
