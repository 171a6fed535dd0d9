from _common import start

log = start(snakemake)

from pathlib import Path

from threadpoolctl import threadpool_limits

from recipe_mil.io.atomic import atomic_path
from recipe_mil.io.synthetic import write_recipes
from recipe_mil.io.tables import read_tsv
from recipe_mil.recipes.pipeline import RecipeConfig, fit_fold_recipes
from recipe_mil.seeds import derive_seed

w = snakemake.wildcards
patients = read_tsv(snakemake.input.patients)
bag_paths = {Path(p).stem: p for p in snakemake.input.bags}
p = snakemake.params
config = RecipeConfig(**p.pool, **p.gmm, **p.recipes)
seed = derive_seed(p.seed, "recipes", w.dataset, w.scenario, w.repeat, w.fold)
with threadpool_limits(snakemake.threads):
    pool, recipes, gmm = fit_fold_recipes(patients, bag_paths, config, seed=seed)
with atomic_path(snakemake.output.pool) as tmp:
    pool.write_h5ad(tmp)
write_recipes(
    snakemake.output.recipes,
    recipes,
    n_clusters=gmm.n_components,
    bic={str(k): v for k, v in gmm.bic.items()},
    pool_patients=sorted(pool.obs["patient"].unique().tolist()),
    seed=seed,
)
log.info("K=%d; recipes for %s", gmm.n_components, ", ".join(recipes))
