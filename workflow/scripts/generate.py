from _common import start

log = start(snakemake)

import anndata as ad

from recipe_mil.io.synthetic import read_recipes, write_synthetic
from recipe_mil.recipes import generate_synthetic
from recipe_mil.seeds import derive_seed

w = snakemake.wildcards
g = snakemake.params.generate
recipes, meta = read_recipes(snakemake.input.recipes)
pool = ad.read_h5ad(snakemake.input.pool, backed="r")
obs = pool.obs
seed = derive_seed(snakemake.params.seed, "generate", w.dataset, w.scenario, w.repeat, w.fold)
syn = generate_synthetic(
    recipes,
    obs["cluster"].to_numpy(),
    obs["label"].astype(str).to_numpy(),
    obs["cohort"].astype(str).to_numpy(),
    n_per_class=g["n_per_class"],
    instance_source=g["instance_source"],
    seed=seed,
)
write_synthetic(snakemake.output.synthetic, syn, attrs={"instance_source": g["instance_source"], "seed": seed})
log.info("generated %d synthetic patients (%d instance references)", len(syn), len(syn.indices))
