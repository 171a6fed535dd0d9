from _common import start

log = start(snakemake)

from recipe_mil.evaluate import collect_metrics, summary_markdown
from recipe_mil.io.atomic import atomic_path, write_text_atomic
from recipe_mil.plots import plot_metrics

summary = collect_metrics(snakemake.input.metrics)
with atomic_path(snakemake.output.tsv) as tmp:
    summary.to_csv(tmp, sep="\t", index=False)
write_text_atomic(snakemake.output.md, summary_markdown(summary))
plot_metrics(summary, snakemake.output.plot)
log.info("summary of %d runs written to %s", len(summary), snakemake.output.tsv)
