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
