# Summary tables and plots across runs; `snakemake --report report.html` bundles them.


localrules:
    summary,


rule summary:
    input:
        metrics=all_metrics(),
    output:
        tsv=report(
            f"{RESULTS}/summary.tsv",
            caption="../report/summary.rst",
            category="Results",
            labels={"table": "summary (per run)"},
        ),
        md=f"{RESULTS}/summary.md",
        plot=report(
            f"{RESULTS}/plots/metrics.png",
            caption="../report/metrics.rst",
            category="Results",
            labels={"figure": "balanced accuracy per scenario and method"},
        ),
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary/summary.tsv"
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/summary.py"


onsuccess:
    summary_md = Path(rules.summary.output.md)
    if summary_md.exists():
        print(f"\nrecipe-mil: summary table {summary_md.resolve()} (per run: {rules.summary.output.tsv})")
        print("recipe-mil: bundle everything with `snakemake --report report.html`")
