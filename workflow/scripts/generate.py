from _common import done, start

log = start(snakemake)

import anndata as ad

from recipe_mil.augment import make_synthetic
from recipe_mil.io.synthetic import read_recipes, write_synthetic
from recipe_mil.seeds import derive_seed

w = snakemake.wildcards
recipes, _ = read_recipes(snakemake.input.recipes)
pool = ad.read_h5ad(snakemake.input.pool)
made = []
for generator, path in snakemake.output.items():
    seed = derive_seed(snakemake.params.seed, "generate", w.dataset, w.scenario, w.repeat, w.fold, generator)
    syn = make_synthetic(generator, pool, recipes, snakemake.params.classes, snakemake.params.config, seed=seed)
    write_synthetic(path, syn, attrs={"generator": generator, "seed": seed})
    log.info("%s: %d synthetic patients (%d instances)", generator, len(syn), len(syn.indices))
    made.append(f"{generator} {len(syn)}")
done(log, "synthetic patients: %s", ", ".join(made))
