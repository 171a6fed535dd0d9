# Summary tables and plots across runs; `snakemake --report report.html` bundles them.


rule summary:
    localrule: True
    input:
        metrics=run_outputs("metrics.json"),
        realism=run_files("realism.tsv") if any(METHODS[m].augmented for m in config["methods"]) else [],
    output:
        html=report(
            f"{SUMMARY}/summary.html",
            caption="../report/summary_html.rst",
            category="Results",
            labels={"result": "1. summary: differences, means, tests, recall, realism"},
        ),
        # the headline section alone: workflow/report/workflow.rst puts it on the report's front page
        headline=f"{SUMMARY}/headline.html",
        md=f"{SUMMARY}/summary.md",
        differences=report(
            f"{SUMMARY}/plots/differences.png",
            caption="../report/differences.rst",
            category="Results",
            labels={"result": "2. differences from real_only (forest plot)"},
        ),
        plot=report(
            f"{SUMMARY}/plots/metrics.png",
            caption="../report/metrics.rst",
            category="Results",
            labels={"result": "3. balanced accuracy and missing-class recall"},
        ),
        tsv=report(
            f"{SUMMARY}/summary.tsv",
            caption="../report/summary.rst",
            category="Results",
            labels={"result": "4. per run (TSV download)"},
        ),
        comparisons=report(
            f"{SUMMARY}/comparisons.tsv",
            caption="../report/comparisons.rst",
            category="Results",
            labels={"result": "5. paired comparisons with real_only (TSV download)"},
        ),
        recall=f"{SUMMARY}/recall.tsv",
        realism=report(
            f"{SUMMARY}/realism.tsv",
            caption="../report/realism.rst",
            category="Realism",
            labels={"result": "realism per run and class (TSV download)"},
        ),
        realism_plot=report(
            f"{SUMMARY}/plots/realism.png",
            caption="../report/realism.rst",
            category="Realism",
            labels={"result": "realism scores (figure)"},
        ),
        # vector copies of the figures (plots.save_figure writes one beside every PNG)
        differences_svg=f"{SUMMARY}/plots/differences.svg",
        plot_svg=f"{SUMMARY}/plots/metrics.svg",
        realism_svg=f"{SUMMARY}/plots/realism.svg",
    log:
        f"{SUMMARY_LOGS}/summary.log",
    benchmark:
        f"{SUMMARY_LOGS}/benchmarks/summary.tsv"
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
        bags=rules.bag_index.output.index,
        synthetic=f"{RESULTS}/{{dataset}}/{{scenario}}/r0f0/synthetic/recipe.h5",
        selected=lambda wildcards: (
            selected_path(f"{RESULTS}/{wildcards.dataset}/{wildcards.scenario}/r0f0", 0)
            if "recipe_selected" in config["methods"]
            else []
        ),
        attention=f"{RESULTS}/{{dataset}}/{{scenario}}/r0f0/recipe/s0/attention.npz",
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
        # vector copies (plots.save_figure writes one beside every PNG)
        svg=[f"{RESULTS}/{{dataset}}/plots/{{scenario}}/{name}.svg" for name in ("recipes", "umap", "attention", "uncertainty")],
    log:
        "logs/{dataset}/plots/{scenario}.log",
    benchmark:
        "logs/benchmarks/{dataset}/plots/{scenario}.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        seed=config["seed"],
        modality=lookup(dpath="datasets/{dataset}/modality", within=config),
        folders=lambda wildcards: dict(zip(SHEETS[wildcards.dataset]["patient"], SHEETS[wildcards.dataset]["path"])),
        code=code("plot_fold.py"),
    script:
        "../scripts/plot_fold.py"


onsuccess:
    summary_md = Path(rules.summary.output.md)
    if summary_md.exists():
        print(f"\nrecipe-mil: summary {Path(rules.summary.output.html).resolve()} (Markdown: {summary_md}, per run: {rules.summary.output.tsv})")
        print("recipe-mil: bundle everything with `snakemake --report report.html` (its first page shows the headline table)")
