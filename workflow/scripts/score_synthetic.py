from _common import start

log = start(snakemake)

import anndata as ad
import numpy as np

from recipe_mil.experiment import load_model, synthetic_collection
from recipe_mil.io.synthetic import read_synthetic, write_synthetic
from recipe_mil.seeds import derive_seed
from recipe_mil.select import score_and_select

w = snakemake.wildcards
p = snakemake.params
syn = read_synthetic(snakemake.input.candidates)
pool = ad.read_h5ad(snakemake.input.pool)
bags = synthetic_collection(syn, pool.X, p.classes)
model = load_model(snakemake.input.model)
seed = derive_seed(p.seed, "select", w.dataset, w.scenario, w.repeat, w.fold)
scores, keep = score_and_select(
    model, bags, passes=p.select["passes"], policy=p.select["policy"], n_per_class=p.n_per_class, seed=seed
)
syn.scores = {k: np.asarray(v) for k, v in scores.items()}
syn.selected = keep
write_synthetic(snakemake.output.synthetic, syn, attrs={"policy": p.select["policy"], "seed": seed})
log.info(
    "scored %d candidates with %d MC-dropout passes; kept %d (%s); mean BALD kept %.4f vs all %.4f",
    len(syn),
    p.select["passes"],
    keep.sum(),
    p.select["policy"],
    scores["bald"][keep].mean(),
    scores["bald"].mean(),
)
