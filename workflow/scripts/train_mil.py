from _common import start

log = start(snakemake)

import json
from pathlib import Path

import anndata as ad
import pandas as pd
import torch

from recipe_mil.experiment import run_method, save_model, synthetic_collection
from recipe_mil.io.atomic import atomic_path, write_text_atomic
from recipe_mil.io.synthetic import read_synthetic
from recipe_mil.mil import TrainConfig
from recipe_mil.seeds import derive_seed
from recipe_mil.splits import parse_scenario

w = snakemake.wildcards
p = snakemake.params
torch.set_num_threads(snakemake.threads)
patients = pd.read_csv(snakemake.input.patients, sep="\t", dtype={"patient": str, "label": str})
bag_paths = {Path(b).stem: b for b in snakemake.input.bags}
seed = derive_seed(p.seed, "mil", w.dataset, w.scenario, w.repeat, w.fold, w.method)
config = TrainConfig(**p.mil, seed=seed, threads=snakemake.threads)
synthetic = None
if "synthetic" in snakemake.input.keys():
    syn = read_synthetic(snakemake.input.synthetic)
    if syn.selected is not None:
        syn = syn.subset(syn.selected)
    synthetic = synthetic_collection(syn, ad.read_h5ad(snakemake.input.pool).X, p.classes)
train_roles = ("train", "external") if w.method == "real_external" else ("train",)
result = run_method(patients, bag_paths, p.classes, config, synthetic=synthetic, train_roles=train_roles, log=log.info)
scenario = parse_scenario(w.scenario)
metrics = {
    "dataset": w.dataset,
    "scenario": scenario.name,
    "method": w.method,
    "repeat": int(w.repeat),
    "fold": int(w.fold),
    **result.metrics,
    "n_per_class": scenario.n_per_class,
    "draw": scenario.draw,
    "missing_class": scenario.missing,
    "seed": seed,
}
for key, frame in (
    ("predictions", result.predictions),
    ("attention", result.attention),
    ("history", pd.DataFrame(result.history)),
):
    with atomic_path(snakemake.output[key]) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)
save_model(result.model, snakemake.output.model)
write_text_atomic(snakemake.output.metrics, json.dumps(metrics, indent=2))
log.info("test balanced accuracy %.3f", metrics["balanced_accuracy"])
