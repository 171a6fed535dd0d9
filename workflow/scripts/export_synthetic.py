from _common import done, start

log = start(snakemake)

from pathlib import Path

import anndata as ad

from recipe_mil.export import write_synthetic_bags
from recipe_mil.io.bags import read_bag, read_bag_index
from recipe_mil.io.synthetic import read_synthetic
from recipe_mil.recipes.pool import pool_features, pool_instance_ids

w = snakemake.wildcards
bag_paths = read_bag_index(snakemake.input.bags)
pool = ad.read_h5ad(snakemake.input.pool)
syn = read_synthetic(snakemake.input.synthetic)
if syn.selected is not None:  # recipe_selected: the candidates the selection kept (training seed 0)
    syn = syn.subset(syn.selected)
sheet = write_synthetic_bags(
    Path(snakemake.output.sheet).parent,
    syn,
    pool_features(pool, bag_paths),
    pool.obs,
    pool_instance_ids(pool, bag_paths),
    method=w.method,
    encoder=read_bag(next(iter(bag_paths.values())), features=False).encoder,
    classes=snakemake.params.classes,
    prefix=f"{w.method}_r{w.repeat}f{w.fold}",
)
done(
    log,
    "%d synthetic patients exported (%s)",
    len(sheet),
    ", ".join(f"{c} {n}" for c, n in sheet.groupby("label").size().items()),
)
