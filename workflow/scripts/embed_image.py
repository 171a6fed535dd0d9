from _common import done, start

log = start(snakemake)

from pathlib import Path

from recipe_mil.embed.image.embed import ImagePatient, write_image_bags
from recipe_mil.embed.image.params import ImageEmbedParams
from recipe_mil.simulate.image import crop_truth

params = ImageEmbedParams(**snakemake.params.image)
patients = [
    ImagePatient(
        patient,
        label,
        folder,
        bag,
        truth=crop_truth(Path(folder).parent, patient) if snakemake.params.simulated else None,
    )
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
