"""A compact Snakemake console: one line per finished job, with the job's key figure from its log.

A rule script logs everything to its log file and ends with one summary line (:func:`summary_line`, written by
``workflow/scripts/_common.py``'s ``done``). :class:`CompactConsole`, a filter on Snakemake's logger installed by
``workflow/rules/common.smk``, drops Snakemake's per-job blocks (job info, shell command, "Select jobs to
execute...", "Execute n jobs...") in real runs and turns each progress message into one line per finished job:
time, progress, rule, wildcards and the summary line read back from the job's log file. The job's log is the
channel, so the line also appears for jobs that ran elsewhere (a cluster node) as long as the log is on a shared
file system. Dry runs, errors (with the failed job's log), warnings and everything else pass unchanged.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping

#: the marker in front of a job's summary line in its log file
DONE_MARK = "done: "
_DONE_RE = re.compile(r" recipe_mil\.rule\.[\w.-]+: done: (.*)$")
_SKIP_MESSAGES = ("Select jobs to execute...",)


def summary_line(message: str) -> str:
    """Return the log message that marks ``message`` as the job's summary line."""
    return DONE_MARK + message


def job_summary(log_paths: Iterable[str], *, tail_bytes: int = 65536) -> str | None:
    """Return the last summary line written to a job's log files, or None.

    Parameters
    ----------
    log_paths
        The job's log files as Snakemake prints them (an annotation such as ``" (check log file(s) ...)"`` after
        the path is ignored).
    tail_bytes
        How much of the end of each file is read (summary lines are written last).

    Returns
    -------
    str or None
        The text after the marker, or None when no log has one (or none can be read).
    """
    found = None
    for entry in log_paths:
        path = str(entry)
        if not os.path.isfile(path):
            path = path.split(" (", 1)[0]
        try:
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - tail_bytes))
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            m = _DONE_RE.search(line)
            if m:
                found = m.group(1).strip()
    return found


def format_job(rule: str, wildcards: Mapping[str, object] | None) -> str:
    """``rule`` or ``rule(key=value, ...)``."""
    if not wildcards:
        return rule
    return f"{rule}({', '.join(f'{k}={v}' for k, v in wildcards.items())})"


class CompactConsole(logging.Filter):
    """Filter for Snakemake's logger: one console line per finished job instead of Snakemake's per-job blocks.

    Parameters
    ----------
    dryrun
        Called for every record: True in a dry run, where every record passes (the plan is the point of a dry run).
    """

    def __init__(self, dryrun: Callable[[], bool]) -> None:
        super().__init__("recipe_mil.console")
        self._dryrun = dryrun
        self._jobs: dict[int, tuple[str, Mapping[str, object] | None, list[str]]] = {}
        self._finished: list[int] = []

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False to drop a record; progress records are rewritten into the finished jobs' lines.

        A record this filter does not understand (another Snakemake version) passes unchanged.
        """
        try:
            return self._filter(record)
        except (AttributeError, KeyError, TypeError, ValueError):
            return True

    def _filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "event", None)
        if event is None:
            return record.getMessage() not in _SKIP_MESSAGES or self._dryrun()
        event = str(event)
        if self._dryrun():
            return True
        if event == "job_info":
            self._jobs[record.jobid] = (record.rule_name, record.wildcards, list(record.log or []))
            return False
        if event in ("group_info", "shellcmd", "job_started"):
            return False
        if event == "job_finished":
            self._finished.append(record.job_id)
            return False
        if event == "progress":
            record.msg = "\n".join(self.lines(record.done, record.total))
            record.args = ()
            record.event = None  # printed as the plain message above
            return True
        return True

    def lines(self, done: int, total: int) -> list[str]:
        """One line per job finished since the last progress record, then forget those jobs."""
        stamp = time.strftime("%H:%M:%S")
        out = []
        for jobid in self._finished or [-1]:
            rule, wildcards, logs = self._jobs.pop(jobid, ("", None, []))
            what = format_job(rule, wildcards) if rule else "job"
            figure = job_summary(logs)
            out.append(f"[{stamp}] {done}/{total} {what}" + (f": {figure}" if figure else ""))
        self._finished = []
        return out


def install_compact_console(logger: logging.Logger, dryrun: Callable[[], bool]) -> CompactConsole:
    """Add a :class:`CompactConsole` to Snakemake's logger (once per process) and return it.

    Parameters
    ----------
    logger
        Snakemake's logger, ``snakemake.logging.logger``.
    dryrun
        See :class:`CompactConsole`.
    """
    for existing in logger.filters:
        if isinstance(existing, CompactConsole):
            existing._dryrun = dryrun  # a later parse in the same process (tests, the API) sees its own workflow
            return existing
    console = CompactConsole(dryrun)
    logger.addFilter(console)
    return console
