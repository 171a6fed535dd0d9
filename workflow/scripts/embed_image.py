from _common import start

log = start(snakemake)

from recipe_mil.embed.image import ImageEmbedParams, write_image_bag

params = ImageEmbedParams(**snakemake.params.image)
n = write_image_bag(
    snakemake.params.folder,
    snakemake.output.bag,
    patient=snakemake.wildcards.patient,
    label=snakemake.params.label,
    params=params,
)
log.info("wrote %s: %d crops of %s with %s", snakemake.output.bag, n, snakemake.params.folder, params.encoder)
