from _common import start

log = start(snakemake)

from recipe_mil.simulate.dataset import simulate_dataset

simulate_dataset(
    snakemake.params.sim,
    classes=snakemake.params.classes,
    target_path=snakemake.output.target,
    external_path=snakemake.output.external,
    sheet_path=snakemake.output.sheet,
)
log.info("wrote %s, %s and %s", snakemake.output.target, snakemake.output.external, snakemake.output.sheet)
