from _common import done, start

log = start(snakemake)

import json

import pandas as pd
import torch

from recipe_mil.config import StudyConfig
from recipe_mil.experiment import FoldData, run_fold, save_model
from recipe_mil.io.atomic import write_text_atomic
from recipe_mil.io.attention import write_attention
from recipe_mil.io.bags import read_bag_index
from recipe_mil.io.synthetic import read_synthetic, write_synthetic
from recipe_mil.io.tables import read_patients, write_tsv
from recipe_mil.recipes.pool import pool_rows, read_pool
from recipe_mil.seeds import derive_seed
from recipe_mil.splits import parse_scenario

w = snakemake.wildcards
p = snakemake.params
torch.set_num_threads(snakemake.threads)
patients = read_patients(snakemake.input.patients)
bag_paths = read_bag_index(snakemake.input.bags)
synthetic = {k.split("__", 1)[1]: read_synthetic(v) for k, v in snakemake.input.items() if k.startswith("synthetic__")}
# the pool's features in pool row order (index-based synthetic bags are rows of it): in memory, or read from the
# bags a batch at a time when the pool is large (pool_rows)
pool_x = pool_rows(read_pool(snakemake.input.pool), bag_paths) if "pool" in snakemake.input.keys() else None
# the typed config sections (recipe_mil.config), built once from the rule's validated sections
study = StudyConfig.from_config(
    {"seed": p.seed, "mil": p.mil, "select": p.select, "generate": {"n_per_class": p.n_per_class}}
)
# common random numbers: every method of this fold and training seed starts from the same seed
mil_seed = derive_seed(study.seed, "mil", w.dataset, w.scenario, w.repeat, w.fold, w.seed)
config = study.mil.train_config(seed=mil_seed, threads=snakemake.threads)  # mil.device: training and selection
results, scored = run_fold(
    FoldData.load(patients, bag_paths, p.classes),
    p.methods,
    config,
    synthetic=synthetic,
    pool_features=pool_x,
    select=study.select,
    n_per_class=study.generate.n_per_class,
    select_seed=derive_seed(study.seed, "select", w.dataset, w.scenario, w.repeat, w.fold, w.seed),
    unseen_val_fraction=study.mil.unseen_class_val_fraction,
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
    for key, frame in (("predictions", result.predictions), ("history", pd.DataFrame(result.history))):
        write_tsv(frame, out[f"{method}__{key}"])
    write_attention(out[f"{method}__attention"], result.attention)
    if study.mil.keep_models:
        save_model(result.model, out[f"{method}__model"])
    write_text_atomic(out[f"{method}__metrics"], json.dumps(metrics, indent=2))
    log.info("%s: test balanced accuracy %.3f", method, metrics["balanced_accuracy"])
if scored is not None:
    attrs = {"policy": study.select.policy, "unseen_class": study.select.unseen_class}
    write_synthetic(out.scored, scored, attrs=attrs)
done(
    log,
    "test balanced accuracy: %s",
    ", ".join(f"{m} {r.metrics['balanced_accuracy']:.2f}" for m, r in results.items()),
)
