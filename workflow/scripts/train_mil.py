from _common import done, start

log = start(snakemake)

import json

import pandas as pd
import torch

from recipe_mil.experiment import FoldData, run_fold, save_model
from recipe_mil.io.atomic import atomic_path, write_text_atomic
from recipe_mil.io.bags import read_bag_index
from recipe_mil.io.synthetic import read_synthetic, write_synthetic
from recipe_mil.io.tables import read_tsv
from recipe_mil.mil import TrainConfig
from recipe_mil.recipes.pool import pool_rows, read_pool
from recipe_mil.seeds import derive_seed
from recipe_mil.select import SelectConfig
from recipe_mil.splits import parse_scenario

w = snakemake.wildcards
p = snakemake.params
torch.set_num_threads(snakemake.threads)
patients = read_tsv(snakemake.input.patients)
bag_paths = read_bag_index(snakemake.input.bags)
synthetic = {k.split("__", 1)[1]: read_synthetic(v) for k, v in snakemake.input.items() if k.startswith("synthetic__")}
# the pool's features in pool row order (index-based synthetic bags are rows of it): in memory, or read from the
# bags a batch at a time when the pool is large (pool_rows)
pool_x = pool_rows(read_pool(snakemake.input.pool), bag_paths) if "pool" in snakemake.input.keys() else None
study = {k: p.mil[k] for k in ("n_seeds", "unseen_class_val_fraction")}
# common random numbers: every method of this fold and training seed starts from the same seed
mil_seed = derive_seed(p.seed, "mil", w.dataset, w.scenario, w.repeat, w.fold, w.seed)
config = TrainConfig(**{k: v for k, v in p.mil.items() if k not in study}, seed=mil_seed, threads=snakemake.threads)
results, scored = run_fold(
    FoldData.load(patients, bag_paths, p.classes),
    p.methods,
    config,
    synthetic=synthetic,
    pool_features=pool_x,
    select=SelectConfig(**p.select),
    n_per_class=p.n_per_class,
    select_seed=derive_seed(p.seed, "select", w.dataset, w.scenario, w.repeat, w.fold, w.seed),
    unseen_val_fraction=study["unseen_class_val_fraction"],
    log=log.info,
)
scenario = parse_scenario(w.scenario)
out = snakemake.output
for method, result in results.items():
    metrics = {
        "dataset": w.dataset,
        "scenario": scenario.name,
        "method": method,
        "repeat": int(w.repeat),
        "fold": int(w.fold),
        "seed": int(w.seed),
        **result.metrics,
        "n_per_class": scenario.n_per_class,
        "draw": scenario.draw,
        "missing_class": scenario.missing,
        "mil_seed": mil_seed,
    }
    for key, frame in (
        ("predictions", result.predictions),
        ("attention", result.attention),
        ("history", pd.DataFrame(result.history)),
    ):
        with atomic_path(out[f"{method}__{key}"]) as tmp:
            frame.to_csv(tmp, sep="\t", index=False)
    save_model(result.model, out[f"{method}__model"])
    write_text_atomic(out[f"{method}__metrics"], json.dumps(metrics, indent=2))
    log.info("%s: test balanced accuracy %.3f", method, metrics["balanced_accuracy"])
if scored is not None:
    write_synthetic(out.scored, scored, attrs={"policy": p.select["policy"], "unseen_class": p.select["unseen_class"]})
done(
    log,
    "test balanced accuracy: %s",
    ", ".join(f"{m} {r.metrics['balanced_accuracy']:.2f}" for m, r in results.items()),
)
