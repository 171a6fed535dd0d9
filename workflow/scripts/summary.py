from _common import done, start

log = start(snakemake)

import pandas as pd

from recipe_mil.evaluate import collect_metrics, collect_recall, scenario_columns
from recipe_mil.io.tables import read_tsv
from recipe_mil.study import SummaryPaths, write_summary

out = snakemake.output
summary = collect_metrics(snakemake.input.metrics)
recall = collect_recall(snakemake.input.metrics)
tables = [t for t in (read_tsv(p) for p in snakemake.input.realism) if len(t)]
realism = scenario_columns(pd.concat(tables, ignore_index=True)) if tables else pd.DataFrame()
paths = SummaryPaths(**{name: getattr(out, name) for name in SummaryPaths.__dataclass_fields__})
write_summary(summary, realism, recall, paths)
done(log, "summary of %d runs written to %s", len(summary), out.tsv)
