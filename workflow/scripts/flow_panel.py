from _common import done, start

log = start(snakemake)

import pandas as pd

from recipe_mil.embed.flow import parse_panel, resolve_panel
from recipe_mil.io.atomic import atomic_path

panel = snakemake.params.panel
# With a configured panel the features are its markers; each file is matched (or fails, naming
# itself) in its own embedding job. Without one, the channels common to all files decide.
features = (
    [pm.marker for pm in parse_panel(panel)]
    if panel
    else resolve_panel(snakemake.params.paths, datasets=snakemake.params.datasets)
)
with atomic_path(snakemake.output.panel) as tmp:
    pd.DataFrame({"feature": features}).to_csv(tmp, sep="\t", index=False)
done(log, "flow features (%d): %s", len(features), ", ".join(features))
