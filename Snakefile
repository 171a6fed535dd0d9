# recipe-mil: run the demo with `snakemake --cores 2`; see README.md, config/README.md and docs/method.md.
# The workflow is workflow/Snakefile (the snakemake-workflows layout that `snakedeploy deploy-workflow` and a
# `module` statement load); this entry point loads it so that `snakemake -s Snakefile` keeps working. A plain
# `include:` would reset the default target (rule `all`) to this file's first rule, of which there is none.
workflow.include("workflow/Snakefile", overwrite_default_target=True)
