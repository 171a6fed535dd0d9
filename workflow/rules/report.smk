# Summary tables and plots across runs; `snakemake --report report.html` bundles them.


rule summary:
    localrule: True
    input:
        metrics=run_outputs("metrics.json"),
        realism=run_files("realism.tsv") if any(METHODS[m].augmented for m in config["methods"]) else [],
    output:
        tsv=report(
            f"{RESULTS}/summary.tsv",
            caption="../report/summary.rst",
            category="Results",
            labels={"table": "summary (per run)"},
        ),
        md=report(
            f"{RESULTS}/summary.md",
            caption="../report/summary_md.rst",
            category="Results",
            labels={"table": "summary (mean ± sd, tests, realism)"},
        ),
        recall=f"{RESULTS}/recall.tsv",
        comparisons=report(
            f"{RESULTS}/comparisons.tsv",
            caption="../report/comparisons.rst",
            category="Results",
            labels={"table": "paired comparisons with real_only"},
        ),
        realism=report(
            f"{RESULTS}/realism.tsv",
            caption="../report/realism.rst",
            category="Realism",
            labels={"table": "realism (per run and class)"},
        ),
        plot=report(
            f"{RESULTS}/plots/metrics.png",
            caption="../report/metrics.rst",
            category="Results",
            labels={"figure": "balanced accuracy per scenario and method"},
        ),
        realism_plot=report(
            f"{RESULTS}/plots/realism.png",
            caption="../report/realism.rst",
            category="Realism",
            labels={"figure": "realism scores"},
        ),
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary/summary.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        code=code("summary.py"),
    script:
        "../scripts/summary.py"


rule plot_fold:
    input:
        recipes=f"{RESULTS}/{{dataset}}/{{scenario}}/r0f0/recipes.json",
        pool=f"{RESULTS}/{{dataset}}/{{scenario}}/r0f0/pool.h5ad",
        synthetic=f"{RESULTS}/{{dataset}}/{{scenario}}/r0f0/synthetic/recipe.h5",
        selected=lambda wildcards: (
            selected_path(f"{RESULTS}/{wildcards.dataset}/{wildcards.scenario}/r0f0", 0)
            if "recipe_selected" in config["methods"]
            else []
        ),
        attention=f"{RESULTS}/{{dataset}}/{{scenario}}/r0f0/recipe/s0/attention.tsv",
        predictions=f"{RESULTS}/{{dataset}}/{{scenario}}/r0f0/recipe/s0/predictions.tsv",
    output:
        recipes=report(
            f"{RESULTS}/{{dataset}}/plots/{{scenario}}/recipes.png",
            caption="../report/recipes.rst",
            category="Recipes",
            subcategory="{dataset}",
            labels={"scenario": "{scenario}", "figure": "recipe heatmap"},
        ),
        umap=report(
            f"{RESULTS}/{{dataset}}/plots/{{scenario}}/umap.png",
            caption="../report/umap.rst",
            category="Pools",
            subcategory="{dataset}",
            labels={"scenario": "{scenario}", "figure": "pool UMAP"},
        ),
        attention=report(
            f"{RESULTS}/{{dataset}}/plots/{{scenario}}/attention.png",
            caption="../report/attention.rst",
            category="Attention",
            subcategory="{dataset}",
            labels={"scenario": "{scenario}", "figure": "top-attention instances"},
        ),
        uncertainty=report(
            f"{RESULTS}/{{dataset}}/plots/{{scenario}}/uncertainty.png",
            caption="../report/uncertainty.rst",
            category="Uncertainty",
            subcategory="{dataset}",
            labels={"scenario": "{scenario}", "figure": "MC-dropout scores"},
        ),
    log:
        "logs/{dataset}/plots/{scenario}.log",
    benchmark:
        "benchmarks/{dataset}/plots/{scenario}.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        seed=config["seed"],
        modality=lambda wildcards: config["datasets"][wildcards.dataset]["modality"],
        folders=lambda wildcards: dict(zip(SHEETS[wildcards.dataset]["patient"], SHEETS[wildcards.dataset]["path"])),
        code=code("plot_fold.py"),
    script:
        "../scripts/plot_fold.py"


onsuccess:
    summary_md = Path(rules.summary.output.md)
    if summary_md.exists():
        print(f"\nrecipe-mil: summary table {summary_md.resolve()} (per run: {rules.summary.output.tsv})")
        print("recipe-mil: bundle everything with `snakemake --report report.html`")
