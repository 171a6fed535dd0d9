from _common import done, start

log = start(snakemake)


from threadpoolctl import threadpool_limits

from recipe_mil.io.bags import read_bag_index
from recipe_mil.io.synthetic import write_recipes
from recipe_mil.io.tables import read_patients
from recipe_mil.recipes.pipeline import RecipeConfig, fit_fold_recipes
from recipe_mil.recipes.pool import resolve_standardize, write_pool
from recipe_mil.seeds import derive_seed

w = snakemake.wildcards
patients = read_patients(snakemake.input.patients)
bag_paths = read_bag_index(snakemake.input.bags)
p = snakemake.params
pool_cfg = {**p.pool, "standardize": resolve_standardize(p.pool["standardize"], p.modality)}
config = RecipeConfig(**pool_cfg, **p.gmm, **p.recipes)
seed = derive_seed(p.seed, "recipes", w.dataset, w.scenario, w.repeat, w.fold)
with threadpool_limits(snakemake.threads):
    fold = fit_fold_recipes(patients, bag_paths, config, seed=seed)
write_pool(snakemake.output.pool, fold.pool)  # obs and parameters only: the bags hold the features
space = fold.pool.uns["gmm"]
write_recipes(
    snakemake.output.recipes,
    fold.recipes,
    n_clusters=fold.gmm.n_components,
    criterion=config.criterion,
    **{k: v for k, v in space.items() if k != "n_components"},
    pool_patients=sorted(fold.pool.obs["patient"].unique().tolist()),
    pooled_target=None if fold.pooled is None else fold.pooled.to_dict(),
    seed=seed,
)
done(
    log,
    "K=%d (%s); truth ARI %s; recipes for %s",
    fold.gmm.n_components,
    config.criterion,
    space["truth_ari"],
    ", ".join(fold.recipes),
)
