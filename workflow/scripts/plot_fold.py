from _common import done, start

log = start(snakemake)


import matplotlib.pyplot as plt
import numpy as np

from recipe_mil.io.attention import read_attention
from recipe_mil.io.bags import read_bag_index
from recipe_mil.io.synthetic import read_recipes, read_synthetic
from recipe_mil.io.tables import read_tsv
from recipe_mil.modalities import get_modality
from recipe_mil.plots import (
    plot_attention,
    plot_attention_thumbnails,
    plot_pool_umap,
    plot_recipes,
    plot_uncertainty,
    save_figure,
)
from recipe_mil.recipes.pool import Projection, project_pool, read_pool

recipes, _ = read_recipes(snakemake.input.recipes)
plot_recipes(recipes, snakemake.output.recipes)
pool = read_pool(snakemake.input.pool)
syn = read_synthetic(snakemake.input.synthetic)
# the GMM space, recomputed from the bags and the stored projection (the pool file holds no features)
bag_paths = read_bag_index(snakemake.input.bags)
z = project_pool(pool, bag_paths, Projection.from_uns(pool.uns["projection"])).astype(np.float32)
plot_pool_umap(z, pool.obs, syn.indices, snakemake.output.umap, seed=snakemake.params.seed)
attention = read_attention(snakemake.input.attention, bag_paths)
predictions = read_tsv(snakemake.input.predictions)
if get_modality(snakemake.params.modality).image_instances:
    plot_attention_thumbnails(attention, predictions, snakemake.params.folders, snakemake.output.attention)
else:
    plot_attention(attention, predictions, snakemake.output.attention)
if snakemake.input.selected:
    scored = read_synthetic(snakemake.input.selected)
    plot_uncertainty(scored.scores, scored.label, scored.selected, snakemake.output.uncertainty)
else:
    fig = plt.figure(figsize=(4, 1))
    fig.text(0.5, 0.5, "recipe_selected is not among the configured methods", ha="center")
    save_figure(fig, snakemake.output.uncertainty)
done(log, "plots written for %s / %s", snakemake.wildcards.dataset, snakemake.wildcards.scenario)
