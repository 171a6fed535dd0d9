from _common import start

log = start(snakemake)

from pathlib import Path

from recipe_mil.embed.image import ImageEmbedParams, write_image_bag
from recipe_mil.simulate.image import crop_truth

patient = snakemake.wildcards.patient
params = ImageEmbedParams(**snakemake.params.image)
n = write_image_bag(
    snakemake.params.folder,
    snakemake.output.bag,
    patient=patient,
    label=snakemake.params.label,
    params=params,
    truth=crop_truth(Path(snakemake.params.folder).parent, patient) if snakemake.params.simulated else None,
)
log.info("wrote %s: %d crops of %s with %s", snakemake.output.bag, n, snakemake.params.folder, params.encoder)
