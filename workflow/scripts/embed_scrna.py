from _common import done, start

log = start(snakemake)

from pathlib import Path

from recipe_mil.embed.scrna import ScrnaEmbedParams, write_scrna_bags
from recipe_mil.sheets import load_sheet

sheet = load_sheet(snakemake.input.sheet, modality="scrna")
out_paths = {Path(p).stem: p for p in snakemake.output.bags}
params = ScrnaEmbedParams(**snakemake.params.scrna, seed=snakemake.params.seed)
write_scrna_bags(
    snakemake.input.target,
    sheet[sheet["patient"].isin(out_paths)],
    out_paths,
    params,
    external_h5ad=snakemake.input.external or None,
    truth_columns=snakemake.params.truth_columns,
)
done(log, "wrote %d bags of dataset %s", len(out_paths), snakemake.params.dataset)
