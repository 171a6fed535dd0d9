from _common import start

log = start(snakemake)

from pathlib import Path

import pandas as pd

from recipe_mil.embed.flow import FlowEmbedParams, write_flow_bag
from recipe_mil.simulate.flow import event_truth

features = pd.read_csv(snakemake.input.panel, sep="\t")["feature"].tolist()
patient = snakemake.wildcards.patient
params = FlowEmbedParams(**snakemake.params.flow, seed=snakemake.params.seed)
write_flow_bag(
    snakemake.params.fcs,
    snakemake.output.bag,
    patient=patient,
    label=snakemake.params.label,
    params=params,
    features=features,
    truth=event_truth(Path(snakemake.params.fcs).parent, patient) if snakemake.params.simulated else None,
)
log.info("wrote %s from %s", snakemake.output.bag, snakemake.params.fcs)
