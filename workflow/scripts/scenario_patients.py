from _common import done, start

log = start(snakemake)

from recipe_mil.io.tables import read_tsv, write_tsv
from recipe_mil.splits import scenario_patients

w = snakemake.wildcards
splits = read_tsv(snakemake.input.splits)
patients = scenario_patients(
    splits, repeat=int(w.repeat), fold=int(w.fold), scenario=w.scenario, seed=snakemake.params.seed
)
write_tsv(patients, snakemake.output.patients)
log.info("%s r%s f%s:\n%s", w.scenario, w.repeat, w.fold, patients.groupby(["role", "label"]).size().to_string())
roles = patients["role"].value_counts()
done(log, ", ".join(f"{r} {roles.get(r, 0)}" for r in ("train", "val", "test", "external")))
