from _common import done, start

log = start(snakemake)

from pathlib import Path

from recipe_mil.simulate.dataset import simulate_dataset

simulate_dataset(
    snakemake.params.sim,
    classes=snakemake.params.classes,
    target_path=snakemake.output.target,
    external_path=snakemake.output.external,
    sheet_path=snakemake.output.sheet,
)
log.info("wrote %s, %s and %s", snakemake.output.target, snakemake.output.external, snakemake.output.sheet)
done(log, "simulated cohort written to %s", Path(snakemake.output.sheet).parent)
