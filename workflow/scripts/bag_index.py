from _common import done, start

log = start(snakemake)

from recipe_mil.io.bags import write_bag_index

index = write_bag_index(snakemake.input.bags, snakemake.output.index)
done(log, "indexed %d bags, %d instances in all", len(index), int(index["n_instances"].sum()))
