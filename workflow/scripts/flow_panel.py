from _common import start

log = start(snakemake)

import pandas as pd

from recipe_mil.embed.flow import resolve_panel
from recipe_mil.io.atomic import atomic_path

features = resolve_panel(snakemake.params.paths, snakemake.params.panel)
with atomic_path(snakemake.output.panel) as tmp:
    pd.DataFrame({"feature": features}).to_csv(tmp, sep="\t", index=False)
log.info("flow features (%d): %s", len(features), ", ".join(features))
