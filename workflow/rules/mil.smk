# Attention MIL on real (+ synthetic) training patients, tested on real held-out patients.


rule train_mil:
    input:
        unpack(synthetic_inputs),
        patients=rules.scenario_patients.output.patients,
        bags=dataset_bags,
    output:
        predictions=f"{RUN}/{{method}}/predictions.tsv",
        metrics=f"{RUN}/{{method}}/metrics.json",
        attention=f"{RUN}/{{method}}/attention.tsv",
        history=f"{RUN}/{{method}}/history.tsv",
    log:
        "logs/{dataset}/{scenario}/r{repeat}f{fold}/{method}/train_mil.log",
    benchmark:
        "benchmarks/{dataset}/{scenario}/r{repeat}f{fold}/{method}/train_mil.tsv"
    conda:
        "../../envs/mil.yaml"
    threads: 1
    resources:
        gpu=1,
    params:
        classes=lambda wildcards: config["datasets"][wildcards.dataset]["classes"],
        mil=config["mil"],
        seed=config["seed"],
    script:
        "../scripts/train_mil.py"
