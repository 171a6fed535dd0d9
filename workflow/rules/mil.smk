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
        model=f"{RUN}/{{method}}/model.pt",
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


rule realism:
    input:
        unpack(realism_inputs),
        pool=rules.recipes.output.pool,
        patients=rules.scenario_patients.output.patients,
        bags=dataset_bags,
    output:
        realism=f"{RUN}/realism.tsv",
    log:
        "logs/{dataset}/{scenario}/r{repeat}f{fold}/realism.log",
    benchmark:
        "benchmarks/{dataset}/{scenario}/r{repeat}f{fold}/realism.tsv"
    conda:
        "../../envs/recipes.yaml"
    params:
        max_instances=config["realism"]["max_instances"],
        seed=config["seed"],
    script:
        "../scripts/realism.py"
