from _common import done, start

log = start(snakemake)

import anndata as ad
import matplotlib.pyplot as plt

from recipe_mil.io.synthetic import read_recipes, read_synthetic
from recipe_mil.io.tables import read_tsv
from recipe_mil.plots import (
    plot_attention,
    plot_attention_thumbnails,
    plot_pool_umap,
    plot_recipes,
    plot_uncertainty,
    save_figure,
)

recipes, _ = read_recipes(snakemake.input.recipes)
plot_recipes(recipes, snakemake.output.recipes)
pool = ad.read_h5ad(snakemake.input.pool)
syn = read_synthetic(snakemake.input.synthetic)
plot_pool_umap(pool.obsm["X_gmm"], pool.obs, syn.indices, snakemake.output.umap, seed=snakemake.params.seed)
attention = read_tsv(snakemake.input.attention)
predictions = read_tsv(snakemake.input.predictions)
if snakemake.params.modality == "image":
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
