"""The compact console filter on Snakemake-style log records (no Snakemake run)."""

import logging

from recipe_mil.console import CompactConsole, install_compact_console, job_summary, summary_line


def record(msg, **extra):
    rec = logging.LogRecord("snakemake.logging", logging.INFO, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


def write_log(path, *messages):
    path.write_text("".join(f"2026-01-01 10:00:00,000 INFO recipe_mil.rule.train_mil: {m}\n" for m in messages))


def test_job_summary_is_the_last_marked_line(tmp_path):
    log = tmp_path / "job.log"
    write_log(log, "epoch 1/5 train_loss=0.7", summary_line("first"), "epoch 2/5", summary_line("K=6; recipes"))
    assert job_summary([str(log)]) == "K=6; recipes"
    # Snakemake annotates log paths in its messages; a missing or unmarked log gives None
    assert job_summary([f"{log} (check log file(s) for error details)"]) == "K=6; recipes"
    write_log(log, "no summary")
    assert job_summary([str(log), str(tmp_path / "missing.log")]) is None


def test_real_run_shows_one_line_per_finished_job(tmp_path):
    log = tmp_path / "train.log"
    write_log(log, "epoch 1/5 train_loss=0.7", summary_line("test balanced accuracy: real_only 0.83"))
    console = CompactConsole(dryrun=lambda: False)
    wildcards = {"dataset": "d", "fold": 0}
    assert not console.filter(record("info", event="job_info", jobid=7, rule_name="train_mil", wildcards=wildcards,
                                     log=[str(log)]))  # fmt: skip
    assert not console.filter(record("info", event="job_info", jobid=8, rule_name="all", wildcards={}, log=[]))
    for dropped in (record(None, event="shellcmd"), record("Execute 1 jobs...", event="job_started")):
        assert not console.filter(dropped)
    assert not console.filter(record("Select jobs to execute..."))
    assert not console.filter(record("Finished jobid: 7", event="job_finished", job_id=7))
    assert not console.filter(record("Finished jobid: 8", event="job_finished", job_id=8))
    progress = record(None, event="progress", done=12, total=39)
    assert console.filter(progress)
    first, second = progress.getMessage().splitlines()
    assert first.endswith("] 12/39 train_mil(dataset=d, fold=0): test balanced accuracy: real_only 0.83")
    assert second.endswith("] 12/39 all")
    assert progress.event is None  # printed as a plain message
    # errors and anything else pass unchanged; the finished jobs are forgotten
    error = record("Error in rule x", event="job_error")
    assert console.filter(error) and error.event == "job_error"
    assert console.filter(record("Building DAG of jobs..."))
    assert console._jobs == {} and console._finished == []


def test_dry_run_passes_everything_and_install_is_idempotent():
    console = CompactConsole(dryrun=lambda: True)
    for rec in (record("info", event="job_info", jobid=1, rule_name="a", wildcards={}, log=[]),
                record("Select jobs to execute..."), record(None, event="shellcmd")):  # fmt: skip
        assert console.filter(rec)
    logger = logging.getLogger("test_console_install")
    first = install_compact_console(logger, lambda: False)
    second = install_compact_console(logger, lambda: True)
    assert first is second and logger.filters == [first] and first._dryrun()


def test_a_record_it_does_not_understand_passes():
    console = CompactConsole(dryrun=lambda: False)
    odd = record("info", event="job_info")  # no jobid, rule_name...: another Snakemake version
    assert console.filter(odd)
