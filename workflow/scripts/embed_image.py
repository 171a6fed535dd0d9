from _common import done, start

log = start(snakemake)

from recipe_mil.embed.image.embed import ImagePatient, write_image_bags
from recipe_mil.embed.image.params import ImageEmbedParams

params = ImageEmbedParams(**snakemake.params.image)
patients = [
    ImagePatient(patient, label, folder, bag)
    for patient, label, folder, bag in zip(
        snakemake.params.patients, snakemake.params.labels, snakemake.params.folders, snakemake.output.bags, strict=True
    )
]
counts = write_image_bags(patients, params)
done(
    log,
    "wrote %d bags (%d crops) with %s: %s",
    len(counts),
    sum(counts),
    params.encoder,
    ", ".join(snakemake.params.patients),
)
