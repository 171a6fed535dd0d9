from _common import done, start

log = start(snakemake)

import pandas as pd

from recipe_mil.evaluate import collect_metrics, collect_recall, paired_comparisons, summary_markdown
from recipe_mil.io.atomic import atomic_path, write_text_atomic
from recipe_mil.io.tables import read_tsv
from recipe_mil.plots import plot_metrics, plot_realism

summary = collect_metrics(snakemake.input.metrics)
recall = collect_recall(snakemake.input.metrics)
tables = [read_tsv(p) for p in snakemake.input.realism]
realism = pd.concat([t for t in tables if len(t)], ignore_index=True) if any(len(t) for t in tables) else pd.DataFrame()
for path, frame in (
    (snakemake.output.tsv, summary),
    (snakemake.output.realism, realism),
    (snakemake.output.recall, recall),
    (snakemake.output.comparisons, paired_comparisons(summary)),
):
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)
write_text_atomic(snakemake.output.md, summary_markdown(summary, realism, recall))
plot_metrics(summary, snakemake.output.plot)
plot_realism(realism, snakemake.output.realism_plot)
done(log, "summary of %d runs written to %s", len(summary), snakemake.output.tsv)
