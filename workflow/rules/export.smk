# Materialised synthetic patients to take away (config `export: true`): per method and fold of the `full` scenario,
# one .h5 bag per synthetic patient (dataset `features`, float32 n_instances x d) and a sample sheet with labels and
# provenance (docs/method.md §9, "Exported synthetic patients").

EXPORT = f"{RESULTS}/{{dataset}}/export/{{method}}/r{{repeat}}f{{fold}}"


rule export_synthetic:
    input:
        unpack(export_synthetic_input),
        bags=rules.bag_index.output.index,
    output:
        bags=directory(f"{EXPORT}/bags"),
        sheet=f"{EXPORT}/samples.tsv",
    log:
        "logs/{dataset}/export/{method}/r{repeat}f{fold}/export_synthetic.log",
    benchmark:
        "logs/benchmarks/{dataset}/export/{method}/r{repeat}f{fold}/export_synthetic.tsv"
    conda:
        "../../envs/recipes.yaml"
    wildcard_constraints:
        method=alternation(AUGMENTED_METHODS),
    params:
        classes=lambda wildcards: config["datasets"][wildcards.dataset]["classes"],
        code=code("export_synthetic.py"),
    script:
        "../scripts/export_synthetic.py"
