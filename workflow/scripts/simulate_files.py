from _common import done, start

log = start(snakemake)

from recipe_mil.simulate.dataset import simulate_file_dataset

sheet = simulate_file_dataset(
    snakemake.params.sim,
    modality=snakemake.params.modality,
    classes=snakemake.params.classes,
    raw_dir=snakemake.output.files,
    sheet_path=snakemake.output.sheet,
)
done(log, "simulated %d %s patients under %s", len(sheet), snakemake.params.modality, snakemake.output.files)
