"""The report a scientist reads: summary tables that join, figures, and the HTML report's front page in a browser."""

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from recipe_mil.evaluate import (
    integer_counts,
    paired_comparisons,
    scenario_columns,
    summary_markdown,
)
from recipe_mil.io.tables import read_tsv
from recipe_mil.methods import METHODS, REFERENCE, methods_for
from recipe_mil.plots import (
    PALETTE,
    REFERENCE_COLOUR,
    differences_figure,
    method_colours,
    metrics_figure,
    patients_by_class,
    realism_figure,
    save_figure,
    uncertainty_figure,
)
from recipe_mil.summary_html import HEADLINE_ID, headline_fragment, markdown_html, summary_page

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["healthy", "disease_a", "disease_b"]
SCENARIOS = ["full", "low_data-n2-d0", "low_data-n4-d0", "missing_class-healthy"]
#: the true effect of a method on balanced accuracy (recipe helps where a class is missing)
EFFECT = {"recipe": {"missing_class": 0.12}, "shuffle": {"full": -0.02}}
#: recall of the missing class per method (0 for the reference: it never saw the class)
MISSING_RECALL = {REFERENCE: 0.0, "real_external": 0.5, "recipe": 0.75}


def study(folds: int = 4, seeds: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A summary and a recall table shaped like the workflow's, with known effects."""
    rows, recall = [], []
    rng = np.random.default_rng(0)
    for sid, fold, seed in itertools.product(SCENARIOS, range(folds), range(seeds)):
        family, n, draw, missing = sid.split("-")[0], np.nan, np.nan, None
        if family == "low_data":
            n, draw = float(sid.split("-")[1][1:]), 0.0
        if family == "missing_class":
            missing = "healthy"
        base = 0.6 + rng.normal(0, 0.03)
        for m in methods_for(list(METHODS), sid):
            ba = base + EFFECT.get(m, {}).get(family, 0.0) + (0.0 if m == REFERENCE else rng.normal(0, 0.002))
            run = {"dataset": "d", "scenario": family, "method": m, "repeat": 0, "fold": fold, "seed": seed}
            extra = {"n_per_class": n, "draw": draw, "missing_class": missing}
            rows.append(
                {
                    **run,
                    "n_real_train": 12 - (fold >= 2) if family == "full" else 6,
                    "n_synthetic": 0 if m in (REFERENCE, "real_external") else 15,
                    "balanced_accuracy": ba,
                    "accuracy": ba,
                    "macro_f1": ba,
                    "auroc": ba,
                    **extra,
                }
            )
            for c in CLASSES:
                r = MISSING_RECALL.get(m, 0.25) if c == missing else 0.7
                recall.append({**run, **extra, "class": c, "recall": r})
    return pd.DataFrame(rows), pd.DataFrame(recall)


def realism_rows() -> pd.DataFrame:
    """A per-run realism table as workflow/scripts/realism.py writes it: scenario ids, no seed."""
    rows = []
    for sid, fold in itertools.product(SCENARIOS, range(4)):
        for m in methods_for(list(METHODS), sid):
            if METHODS[m].augmented:
                for c in CLASSES:
                    rows.append(
                        {"method": m, "class": c, "n_synthetic": 5, "n_heldout": 3, "mmd_bag": 0.1, "mmd_bag_ref": 0.05,
                         "c2st": 0.7, "c2st_p": 0.2, "c2st_ref": 0.6, "c2st_ref_p": 0.4, "mmd_instance": 0.01,
                         "mmd_instance_ref": 0.01, "dataset": "d", "scenario": sid, "repeat": 0, "fold": fold}
                    )  # fmt: skip
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- tables that join


def test_realism_gets_the_summary_scenario_columns_and_joins(tmp_path):
    summary, _ = study()
    realism = scenario_columns(realism_rows())
    assert list(realism.columns[:8]) == [
        "dataset",
        "scenario",
        "n_per_class",
        "draw",
        "missing_class",
        "method",
        "repeat",
        "fold",
    ]
    assert set(realism["scenario"]) == set(summary["scenario"]) == {"full", "low_data", "missing_class"}
    keys = ["dataset", "scenario", "n_per_class", "draw", "missing_class", "method", "repeat", "fold"]
    # through the files, as a user would join them: every realism row finds its runs in summary.tsv
    for name, frame in (("summary", summary), ("realism", realism)):
        integer_counts(frame).to_csv(tmp_path / f"{name}.tsv", sep="\t", index=False)
    summary, realism = read_tsv(tmp_path / "summary.tsv"), read_tsv(tmp_path / "realism.tsv")
    joined = realism.merge(summary[keys].drop_duplicates(), on=keys, how="left", indicator=True)
    assert len(joined) == len(realism) == 3 * 4 * (6 + 6 + 6 + 7) and (joined["_merge"] == "both").all()
    assert scenario_columns(realism) is realism  # already split: left as it is


def test_tables_write_counts_as_integers(tmp_path):
    summary, _ = study()
    path = tmp_path / "summary.tsv"
    integer_counts(summary).to_csv(path, sep="\t", index=False)
    rows = path.read_text().splitlines()
    header = rows[0].split("\t")
    low = next(r.split("\t") for r in rows if "\tlow_data\t" in r)
    full = next(r.split("\t") for r in rows if "\tfull\t" in r)
    assert low[header.index("n_per_class")] == "2" and low[header.index("draw")] == "0"
    assert full[header.index("n_per_class")] == "" and full[header.index("n_real_train")] == "12"
    back = read_tsv(path)
    assert back["n_per_class"].value_counts().to_dict() == {2.0: 56, 4.0: 56}  # read back as numbers
    with pytest.raises(ValueError, match="n_synthetic"):
        integer_counts(summary.assign(n_synthetic=1.5))


def test_summary_markdown_opens_with_headline_in_registry_order():
    summary, recall = study()
    md = summary_markdown(summary, realism_rows(), recall)
    assert md.index("## Difference from real_only") < md.index("## Mean ± sd")
    header = next(line for line in md.splitlines() if line.startswith("| dataset | scenario | runs |"))
    assert header.split(" | ")[3:5] == [REFERENCE, "real_external"]  # registry order, reference first
    mean_rows = [line for line in md.splitlines() if line.startswith("| d | full | ")][1:]  # after the headline row
    assert [r.split(" | ")[2] for r in mean_rows[:3]] == [REFERENCE, "shuffle", "remix"]
    # counts are whole numbers: a count that differs between folds is a range, never a mean like 11.5
    assert f"| d | full | {REFERENCE} | 8 | 11–12 | 0 |" in md
    # scenarios in reading order, low-data sizes numerically; realism rows under the summary's scenario names
    labels = [line.split(" | ")[1] for line in md.split("## Mean")[0].splitlines() if line.startswith("| d |")]
    assert labels == ["full", "low_data (n=2)", "low_data (n=4)", "missing_class (healthy)"]
    realism_part = md.split("## Realism")[1]
    assert "| d | missing_class (healthy) | recipe | healthy |" in realism_part
    # the recipe's effect where a class is missing is found and starred
    recipe_cell = md.split("| d | missing_class (healthy) |")[1].splitlines()[0].split(" | ")[6]
    assert float(recipe_cell.split()[0]) == pytest.approx(0.12, abs=0.005) and recipe_cell.endswith("*")


# ---------------------------------------------------------------- HTML


def test_summary_html_shows_the_headline_table():
    summary, recall = study()
    md = summary_markdown(summary, None, recall)
    fragment = headline_fragment(md)
    assert fragment.startswith(f'<div id="{HEADLINE_ID}">')
    assert fragment.count("<table") == 1 and "Mean ± sd" not in fragment  # the headline only
    assert "<th>real_<wbr>only</th>" in fragment and "<th>recipe</th>" in fragment
    # the significant cells (shuffle where nothing is missing, recipe where a class is) are highlighted, each
    # interval on a second line
    sig = [c for c in fragment.split("<td") if 'class="num sig"' in c]
    assert [c[len(' class="num sig">') :].split("<br>")[0] for c in sig] == ["-0.020*", "+0.119*"]
    assert '<span class="ci">[+0.116, +0.123]</span>' in sig[1]
    page = summary_page(md)
    assert page.startswith("<!DOCTYPE html>") and page.count("<table") == 4  # headline, means, comparisons, recall
    assert markdown_html("# t\n\na `b` <c>\n") == "<h1>t</h1>\n<p>a <code>b</code> &lt;c&gt;</p>"


# ---------------------------------------------------------------- figures


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def _overlaps(fig, ax) -> list[tuple[str, str]]:
    fig.canvas.draw()
    boxes = [(t.get_text(), t.get_window_extent()) for t in ax.get_xticklabels() if t.get_text()]
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]


def _bar_colours(ax) -> set[str]:
    return {to_hex(p.get_facecolor()) for p in ax.patches}


def test_one_colour_per_method_across_figures():
    colours = method_colours()
    assert list(colours) == list(METHODS) and len(set(colours.values())) == len(METHODS)
    assert colours[REFERENCE] == REFERENCE_COLOUR and colours["real_external"] == PALETTE[0]
    assert method_colours(["mine"])["mine"] not in list(colours.values())[1:3]  # a new method, next colour
    summary, recall = study()
    metrics = metrics_figure(summary, recall)
    diffs = differences_figure(paired_comparisons(summary))
    realism = realism_figure(realism_rows())
    # recipe is one colour in the metrics bars, the forest plot and the realism bars
    recipe = colours["recipe"]
    assert recipe in _bar_colours(metrics.axes[0])
    assert recipe in {to_hex(line.get_color()) for ax in diffs.axes for line in ax.lines}
    assert recipe in _bar_colours(realism.axes[0])
    augmented = {colours[m] for m in METHODS if METHODS[m].augmented}
    assert _bar_colours(realism.axes[0]) - augmented == {"#bdbdbd"}  # plus the grey real reference
    assert _bar_colours(metrics.axes[0]) == set(colours.values())
    for fig in (metrics, diffs, realism):
        plt.close(fig)


def test_metrics_figure_every_scenario_reference_chance_and_missing_recall():
    summary, recall = study()
    fig = metrics_figure(summary, recall)
    main, missing = fig.axes[0], fig.axes[1]
    assert _texts(main) == ["full", "low_data\n(n=2)", "low_data\n(n=4)", "missing_class\n(healthy)"]
    assert not _overlaps(fig, main)
    for ax in (main, missing):
        assert ax.get_xlabel() and ax.get_ylabel()
        chance = [line for line in ax.lines if line.get_linestyle() == ":"]
        assert len(chance) == 1 and chance[0].get_ydata()[0] == pytest.approx(1 / 3)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0] == f"{REFERENCE} (reference)" and "chance:\n1 / number of classes" in legend
    assert any(p.get_hatch() for p in main.patches)  # the reference's bars are hatched
    # the missing class's recall, per method in registry order
    heights = {to_hex(p.get_facecolor()): p.get_height() for p in missing.patches}
    colours = method_colours()
    for m in methods_for(list(METHODS), "missing_class-healthy"):
        assert heights[colours[m]] == pytest.approx(MISSING_RECALL.get(m, 0.25))
    assert _texts(missing) == ["missing_class\n(healthy)"]
    plt.close(fig)


def test_metrics_figure_labels_do_not_overlap_with_many_scenarios():
    summary, recall = study(folds=2, seeds=1)
    more = [summary]
    for n in (8, 16, 32, 64):  # more low-data sizes: the figure widens instead of crowding its labels
        more.append(summary[summary["n_per_class"] == 2].assign(n_per_class=float(n)))
    fig = metrics_figure(pd.concat(more, ignore_index=True), recall)
    assert len(_texts(fig.axes[0])) == 8 and not _overlaps(fig, fig.axes[0])
    plt.close(fig)


def test_differences_figure_is_the_headline_as_a_forest_plot():
    summary, _ = study()
    comp = paired_comparisons(summary)
    fig = differences_figure(comp)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [
        "d: full",
        "d: low_data (n=2)",
        "d: low_data (n=4)",
        "d: missing_class (healthy)",
    ]
    ax = panels[-1]
    assert [t.get_text() for t in panels[0].get_yticklabels()] == [m for m in METHODS if m != REFERENCE]
    zero = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(zero) == 1 and list(zero[0].get_xdata()) == [0, 0]
    row = comp[(comp["scenario"] == "missing_class") & (comp["method"] == "recipe")].iloc[0]
    colour = method_colours()["recipe"]
    marker = next(line for line in ax.lines if to_hex(line.get_color()) == colour and line.get_marker() == "o")
    assert marker.get_xdata()[0] == pytest.approx(row["mean_diff"])
    assert to_hex(marker.get_markerfacecolor()) == colour  # filled: Holm p < 0.05
    bars = next(c for c in ax.collections if to_hex(c.get_colors()[0]) == colour)
    (x0, _), (x1, _) = bars.get_segments()[0]
    assert (x0, x1) == pytest.approx((row["ci_low"], row["ci_high"]))
    shuffle = next(line for line in ax.lines if to_hex(line.get_color()) == method_colours()["shuffle"])
    assert to_hex(shuffle.get_markerfacecolor()) == "#ffffff"  # no difference: an open marker
    assert ax.get_xlabel() and panels[0].get_ylabel() == "method"
    plt.close(fig)
    empty = differences_figure(pd.DataFrame())
    assert "no comparisons" in empty.axes[0].texts[0].get_text()
    plt.close(empty)


def test_save_figure_writes_png_and_a_stable_svg(tmp_path):
    for name in ("a", "b"):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1], label="x")
        ax.set(xlabel="x", ylabel="y")
        save_figure(fig, tmp_path / f"{name}.png")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    svg = (tmp_path / "a.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert svg == (tmp_path / "b.svg").read_text()  # same figure, same file (no date, fixed ids)


def test_attention_patients_come_from_every_class():
    # ids sorted so that the first 12 are all one class (what the figure showed before)
    pred = pd.DataFrame(
        {"patient": [f"P{i:02d}" for i in range(20)], "label": ["a"] * 14 + ["b"] * 4 + ["c"] * 2, "predicted": "a"}
    )
    chosen = patients_by_class(pred, 12)
    assert len(chosen) == 12
    assert pred.set_index("patient").loc[chosen, "label"].value_counts().to_dict() == {"a": 6, "b": 4, "c": 2}
    few = patients_by_class(pred, 3)
    assert pred.set_index("patient").loc[few, "label"].tolist() == ["a", "b", "c"]


def test_uncertainty_figure_one_row_per_class_plain_titles():
    rng = np.random.default_rng(1)
    labels = np.array(["healthy"] * 6 + ["disease"] * 6)
    scores = {k: rng.random(12) for k in ("bald", "entropy", "p_label")}
    selected = np.arange(12) % 2 == 0
    fig = uncertainty_figure(scores, labels, selected)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 6 and titles[0] == "healthy: disagreement between dropout passes (BALD)"
    assert titles[3] == "disease: disagreement between dropout passes (BALD)"
    assert all(ax.get_ylabel() == "synthetic patients" for ax in fig.axes)
    assert [ax.get_xlabel() for ax in fig.axes[3:]] == [
        "mutual information (nats)",
        "predictive entropy (nats)",
        "mean probability of the bag's class",
    ]
    # per class, the kept candidates are that class's selected ones
    kept = sum(p.get_height() for p in fig.axes[0].patches if to_hex(p.get_facecolor()) == "#d95f02")
    assert kept == int(selected[labels == "healthy"].sum())
    plt.close(fig)


# ---------------------------------------------------------------- the tiny run and its report in a browser


def test_tiny_run_summary_files(tiny_run):
    work, _, _ = tiny_run
    res = work / "results"
    summary, realism = read_tsv(res / "summary.tsv"), read_tsv(res / "realism.tsv")
    assert set(realism["scenario"]) == set(summary["scenario"]) == {"full", "low_data", "missing_class"}
    assert "\t2.0\t" not in (res / "summary.tsv").read_text() and "\t2\t0\t" in (res / "summary.tsv").read_text()
    keys = ["dataset", "scenario", "n_per_class", "draw", "missing_class", "method", "repeat", "fold"]
    joined = realism.merge(summary[keys].drop_duplicates(), on=keys, how="left", indicator=True)
    assert len(joined) == len(realism) and (joined["_merge"] == "both").all()
    md = (res / "summary.md").read_text()
    html = (res / "summary.html").read_text()
    assert (res / "headline.html").read_text().startswith(f'<div id="{HEADLINE_ID}">')
    # headline, means, comparisons, recall, realism, power
    assert html.count("<table") == md.count("\n|---|") == 6 and "## Power: the smallest difference" in md
    for png in sorted(res.rglob("*.png")):
        svg = png.with_suffix(".svg")
        assert svg.stat().st_size > 5_000 and "<svg" in svg.read_text()[:2000], svg
    assert (res / "plots/differences.png").stat().st_size > 10_000


def _browser() -> str | None:
    """A Chromium for playwright: $RECIPE_MIL_CHROMIUM, or Debian's chromium-headless-shell / chromium."""
    names = [os.environ.get("RECIPE_MIL_CHROMIUM", ""), "chromium-headless-shell", "chromium", "chromium-browser"]
    return next((path for name in names if name and (path := shutil.which(name))), None)


def test_report_front_page_shows_the_headline_table(request, tmp_path):
    """Build the report of the tiny run, open it in headless Chromium and read the table on its first page."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install '.[test]')")
    browser_path = _browser()
    if browser_path is None:
        pytest.skip("no Chromium found: apt-get install chromium-headless-shell (.ci/run does)")
    work, cfg, _ = request.getfixturevalue("tiny_run")  # only now: a skip costs no workflow run
    report = tmp_path / "report.html"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work)]
    cmd += ["--configfile", str(cfg), "--workflow-profile", str(REPO / "profiles/ci"), "--report", str(report)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=work)
    assert res.returncode == 0, res.stderr[-3000:]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.as_uri())
        table = page.locator(f"#{HEADLINE_ID} table")
        sync_api.expect(table).to_be_visible(timeout=30_000)
        page.screenshot(path=str(tmp_path / "front_page.png"))
        box = table.bounding_box()
        headers = [h.replace("\u200b", "") for h in table.locator("thead th").all_inner_texts()]
        rows = [r.split("\t") for r in table.locator("tbody tr").all_inner_texts()]
        mime = page.evaluate("Object.values(results).filter(r => r.name === 'summary.html').map(r => r.mime_type)")
        browser.close()
    # on the first page, without scrolling, the full width of the table in view
    assert box["y"] < 1000 and box["x"] + box["width"] <= 1400, box
    assert headers[:4] == ["dataset", "scenario", "runs", REFERENCE]
    assert headers[4:] == [m for m in METHODS if m != REFERENCE]
    assert [r[1] for r in rows] == ["full", "low_data (n=2)", "missing_class (healthy)"]
    summary = read_tsv(work / "results/summary.tsv")
    ref = summary[(summary["method"] == REFERENCE) & (summary["scenario"] == "full")]["balanced_accuracy"].mean()
    assert rows[0][3] == f"{ref:.3f}"  # the numbers of summary.tsv
    assert mime == ["text/html"]  # the whole summary is shown inline (an HTML result), not offered as a download
    assert not errors, errors
