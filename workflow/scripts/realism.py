from _common import done, start

log = start(snakemake)


from recipe_mil.io.bags import read_bag, read_bag_index
from recipe_mil.io.synthetic import read_synthetic
from recipe_mil.io.tables import read_patients, write_tsv
from recipe_mil.realism import realism_for_run
from recipe_mil.recipes.pool import read_pool
from recipe_mil.seeds import derive_seed

w = snakemake.wildcards
fixed = {"pool", "patients", "bags"}
synthetic = {k: read_synthetic(v) for k, v in snakemake.input.items() if k not in fixed}
patients = read_patients(snakemake.input.patients)
bag_paths = read_bag_index(snakemake.input.bags)
heldout = {}
for row in patients[patients["role"] == "test"].itertuples():
    heldout.setdefault(row.label, []).append(read_bag(bag_paths[row.patient]).features)
table = realism_for_run(
    synthetic,
    read_pool(snakemake.input.pool, bag_paths),
    heldout,
    max_instances=snakemake.params.max_instances,
    permutations=snakemake.params.permutations,
    seed=derive_seed(snakemake.params.seed, "realism", w.dataset, w.scenario, w.repeat, w.fold),
)
table = table.assign(dataset=w.dataset, scenario=w.scenario, repeat=int(w.repeat), fold=int(w.fold))
write_tsv(table, snakemake.output.realism)
log.info("realism:\n%s", table.to_string())
c2st = table.groupby("method", sort=False)["c2st"].mean()
done(log, "mean C2ST (0.5 = indistinguishable): %s", ", ".join(f"{m} {v:.2f}" for m, v in c2st.items()))
