from _common import done, start

log = start(snakemake)

from pathlib import Path

from recipe_mil.embed.flow import FlowEmbedParams, write_flow_bag
from recipe_mil.io.bags import bag_shape
from recipe_mil.io.tables import read_tsv
from recipe_mil.simulate.flow import event_truth

features = read_tsv(snakemake.input.panel)["feature"].tolist()
patient = snakemake.wildcards.patient
params = FlowEmbedParams(**snakemake.params.flow, seed=snakemake.params.seed)
write_flow_bag(
    snakemake.params.fcs,
    snakemake.output.bag,
    patient=patient,
    label=snakemake.params.label,
    params=params,
    features=features,
    dataset=snakemake.params.fcs_dataset,
    truth=event_truth(Path(snakemake.params.fcs).parent, patient) if snakemake.params.simulated else None,
)
log.info("wrote %s from %s", snakemake.output.bag, snakemake.params.fcs)
done(log, "%d events x %d features", *bag_shape(snakemake.output.bag))
