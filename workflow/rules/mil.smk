# Attention MIL on real (+ synthetic) training patients, tested on real held-out patients.
# One job per fold trains every method (real_only first: its model scores the recipe candidates).

RESULT_FILES = ("predictions.tsv", "metrics.json", "attention.tsv", "history.tsv", "model.pt")


rule train_mil:
    input:
        unpack(fold_synthetic_inputs),
        patients=rules.scenario_patients.output.patients,
        bags=dataset_bags,
    output:
        **{
            f"{m}__{f.split('.')[0]}": f"{RUN}/{m}/{f}"
            for m in fold_methods()
            for f in RESULT_FILES
        },
        **(
            {"scored": f"{RUN}/synthetic/recipe_selected.h5"}
            if "recipe_selected" in config["methods"]
            else {}
        ),
    log:
        "logs/{dataset}/{scenario}/r{repeat}f{fold}/train_mil.log",
    benchmark:
        "benchmarks/{dataset}/{scenario}/r{repeat}f{fold}/train_mil.tsv"
    conda:
        "../../envs/mil.yaml"
    threads: 1
    resources:
        gpu=1,
    params:
        classes=lambda wildcards: config["datasets"][wildcards.dataset]["classes"],
        methods=fold_methods(),
        mil=config["mil"],
        select=config["select"],
        n_per_class=config["generate"]["n_per_class"],
        seed=config["seed"],
        code=code("train_mil.py"),
    script:
        "../scripts/train_mil.py"


rule train_mil_external:
    input:
        patients=rules.scenario_patients.output.patients,
        bags=dataset_bags,
    output:
        **{f"real_external__{f.split('.')[0]}": f"{RUN}/real_external/{f}" for f in RESULT_FILES},
    log:
        "logs/{dataset}/{scenario}/r{repeat}f{fold}/train_mil_external.log",
    benchmark:
        "benchmarks/{dataset}/{scenario}/r{repeat}f{fold}/train_mil_external.tsv"
    conda:
        "../../envs/mil.yaml"
    threads: 1
    resources:
        gpu=1,
    wildcard_constraints:
        scenario=r"missing_class-[A-Za-z0-9_.+-]+",
    params:
        classes=lambda wildcards: config["datasets"][wildcards.dataset]["classes"],
        methods=["real_external"],
        mil=config["mil"],
        select=config["select"],
        n_per_class=config["generate"]["n_per_class"],
        seed=config["seed"],
        code=code("train_mil.py"),
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
        code=code("realism.py"),
    script:
        "../scripts/realism.py"
