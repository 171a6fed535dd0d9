from _common import done, start

log = start(snakemake)


from recipe_mil.augment import GeneratorInput, make_synthetic
from recipe_mil.config import StudyConfig
from recipe_mil.io.bags import read_bag_index
from recipe_mil.io.synthetic import read_recipes, write_synthetic
from recipe_mil.recipes.pool import read_pool
from recipe_mil.recipes.recipes import ClassRecipe
from recipe_mil.seeds import derive_seed

w = snakemake.wildcards
recipes, meta = read_recipes(snakemake.input.recipes)
pooled = meta.get("pooled_target")
# features (from the bags) only for the generators that compute with them (ReMix, PseMix prototypes)
with_features = any(g in ("remix", "psemix") for g in snakemake.output.keys())
bag_paths = read_bag_index(snakemake.input.bags)
inp = GeneratorInput(
    pool=read_pool(snakemake.input.pool, bag_paths if with_features else None),
    recipes=recipes,
    pooled_recipe=None if pooled is None else ClassRecipe.from_dict(pooled),
    classes=snakemake.params.classes,
    config=StudyConfig.from_config(snakemake.params.config),  # typed once: generate, select, remix, psemix
)
# one seed for every generator of the fold (common random numbers): recipe and its ablations draw the same
# proportions, sizes and counts wherever their recipes agree, so they differ only in what is ablated
seed = derive_seed(snakemake.params.seed, "generate", w.dataset, w.scenario, w.repeat, w.fold)
made = []
for generator, path in snakemake.output.items():
    syn = make_synthetic(generator, inp, seed=seed)
    write_synthetic(path, syn, attrs={"generator": generator, "seed": seed})
    log.info("%s: %d synthetic patients (%d instances)", generator, len(syn), len(syn.indices))
    made.append(f"{generator} {len(syn)}")
done(log, "synthetic patients: %s", ", ".join(made))
