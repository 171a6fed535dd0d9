from _common import done, start

log = start(snakemake)

from recipe_mil.io.tables import write_tsv
from recipe_mil.sheets import load_sheet
from recipe_mil.splits import make_splits

sheet = load_sheet(snakemake.input.sheet, modality=snakemake.params.modality)
s = snakemake.params.splits
splits = make_splits(
    sheet, n_folds=s["n_folds"], n_repeats=s["n_repeats"], val_fraction=s["val_fraction"], seed=snakemake.params.seed
)
write_tsv(splits, snakemake.output.splits)
log.info("role counts:\n%s", splits.groupby(["repeat", "fold", "role"]).size().to_string())
done(log, "%d patients, %d repeat(s) x %d folds", splits["patient"].nunique(), s["n_repeats"], s["n_folds"])
