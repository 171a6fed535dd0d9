from _common import done, start

log = start(snakemake)

import pandas as pd

from recipe_mil.embed.flow import parse_panel, resolve_panel
from recipe_mil.io.tables import write_tsv

panel = snakemake.params.panel
# With a configured panel the features are its markers; each file is matched (or fails, naming
# itself) in its own embedding job. Without one, the channels common to all files decide.
features = (
    [pm.marker for pm in parse_panel(panel)]
    if panel
    else resolve_panel(snakemake.params.paths, datasets=snakemake.params.datasets)
)
write_tsv(pd.DataFrame({"feature": features}), snakemake.output.panel)
done(log, "flow features (%d): %s", len(features), ", ".join(features))
