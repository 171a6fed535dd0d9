from _common import done, start

log = start(snakemake)

import pandas as pd

from recipe_mil.evaluate import (
    collect_metrics,
    collect_recall,
    in_method_order,
    integer_counts,
    paired_comparisons,
    scenario_columns,
    summary_markdown,
)
from recipe_mil.io.atomic import write_text_atomic
from recipe_mil.io.tables import read_tsv, write_tsv
from recipe_mil.plots import plot_differences, plot_metrics, plot_realism
from recipe_mil.summary_html import headline_fragment, summary_page

out = snakemake.output
summary = collect_metrics(snakemake.input.metrics)
recall = collect_recall(snakemake.input.metrics)
tables = [t for t in (read_tsv(p) for p in snakemake.input.realism) if len(t)]
realism = scenario_columns(pd.concat(tables, ignore_index=True)) if tables else pd.DataFrame()
comparisons = paired_comparisons(summary)
if len(comparisons):
    comparisons = in_method_order(comparisons, by=["dataset", "scenario", "n_per_class", "missing_class"])
for path, frame in ((out.tsv, summary), (out.realism, realism), (out.recall, recall), (out.comparisons, comparisons)):
    write_tsv(integer_counts(frame), path)
markdown = summary_markdown(summary, realism, recall)
write_text_atomic(out.md, markdown)
write_text_atomic(out.html, summary_page(markdown))
write_text_atomic(out.headline, headline_fragment(markdown))
plot_metrics(summary, out.plot, recall=recall)
plot_differences(comparisons, out.differences)
plot_realism(realism, out.realism_plot)
done(log, "summary of %d runs written to %s", len(summary), out.tsv)
