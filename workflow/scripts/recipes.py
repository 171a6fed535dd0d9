from _common import done, start

log = start(snakemake)

from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

from recipe_mil.io.atomic import atomic_path
from recipe_mil.io.synthetic import write_recipes
from recipe_mil.recipes.pipeline import RecipeConfig, fit_fold_recipes
from recipe_mil.seeds import derive_seed

w = snakemake.wildcards
patients = pd.read_csv(snakemake.input.patients, sep="\t", dtype={"patient": str, "label": str})
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
done(log, "K=%d; recipes for %s", gmm.n_components, ", ".join(recipes))
