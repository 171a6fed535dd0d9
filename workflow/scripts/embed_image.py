from _common import done, start

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
done(log, "%d crops embedded with %s", n, params.encoder)
