from _common import done, start

log = start(snakemake)

from recipe_mil.io.bags import read_bag, write_bag

bag = read_bag(snakemake.input.bag)
write_bag(
    snakemake.output.bag,
    bag.features,
    bag.instance_ids,
    patient=snakemake.wildcards.patient,
    label=snakemake.params.label,
    encoder=bag.encoder,
    truth=bag.truth or None,
)
done(log, "imported %s: %d instances x %d", snakemake.input.bag, *bag.features.shape)
