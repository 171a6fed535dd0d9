# Simulated cohorts with a known ground truth: the embedded demo data (nothing is downloaded).


rule simulate_scrna:
    output:
        target=f"{RESULTS}/{{dataset}}/raw/target.h5ad",
        external=f"{RESULTS}/{{dataset}}/raw/external.h5ad",
        sheet=f"{RESULTS}/{{dataset}}/raw/samples.tsv",
    log:
        "logs/{dataset}/simulate_scrna.log",
    benchmark:
        "logs/benchmarks/{dataset}/simulate_scrna.tsv"
    conda:
        "../../envs/embed-scrna.yaml"
    wildcard_constraints:
        dataset=alternation(simulated_by("simulate_scrna")),
    params:
        sim=lookup(dpath="datasets/{dataset}/simulate", within=config),
        classes=lookup(dpath="datasets/{dataset}/classes", within=config),
        code=code("simulate_scrna.py"),
    script:
        "../scripts/simulate_scrna.py"


rule simulate_files:
    output:
        files=directory(f"{RESULTS}/{{dataset}}/raw/files"),
        sheet=f"{RESULTS}/{{dataset}}/raw/samples.tsv",
    log:
        "logs/{dataset}/simulate_files.log",
    benchmark:
        "logs/benchmarks/{dataset}/simulate_files.tsv"
    conda:
        "../../envs/simulate.yaml"
    wildcard_constraints:
        dataset=alternation(simulated_by("simulate_files")),
    params:
        sim=lookup(dpath="datasets/{dataset}/simulate", within=config),
        classes=lookup(dpath="datasets/{dataset}/classes", within=config),
        modality=lookup(dpath="datasets/{dataset}/modality", within=config),
        code=code("simulate_files.py"),
    script:
        "../scripts/simulate_files.py"
