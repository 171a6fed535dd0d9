# recipe-mil: recipe-based synthetic patients for data-scarce multiple instance learning.
# Run the demo with `snakemake --cores 2`; see README.md and config/README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/recipes.smk"
include: "workflow/rules/mil.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.summary.output,
        fold_plots(),
