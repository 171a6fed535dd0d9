# Splits, scenario patient sets, pools, GMM, recipes and index-based synthetic patients.

RUN = f"{RESULTS}/{{dataset}}/{{scenario}}/r{{repeat}}f{{fold}}"


rule splits:
    localrule: True  # a directive of the rule, so that it stays local under a `use rule * from ... as prefix_*`
    input:
        sheet=sheet_path,
    output:
        splits=f"{RESULTS}/{{dataset}}/splits.tsv",
    log:
        "logs/{dataset}/splits.log",
    benchmark:
        "logs/benchmarks/{dataset}/splits.tsv"
    conda:
        "../../envs/recipes.yaml"
    params:
        modality=lookup(dpath="datasets/{dataset}/modality", within=config),
        splits=config["splits"],
        seed=config["seed"],
        code=code("splits.py"),
    script:
        "../scripts/splits.py"


rule scenario_patients:
    localrule: True
    input:
        splits=rules.splits.output.splits,
    output:
        patients=f"{RUN}/patients.tsv",
    log:
        "logs/{dataset}/{scenario}/r{repeat}f{fold}/scenario_patients.log",
    benchmark:
        "logs/benchmarks/{dataset}/{scenario}/r{repeat}f{fold}/scenario_patients.tsv"
    conda:
        "../../envs/recipes.yaml"
    params:
        seed=config["seed"],
        code=code("scenario_patients.py"),
    script:
        "../scripts/scenario_patients.py"


rule recipes:
    input:
        patients=rules.scenario_patients.output.patients,
        bags=rules.bag_index.output.index,
    output:
        pool=f"{RUN}/pool.h5ad",
        recipes=f"{RUN}/recipes.json",
    log:
        "logs/{dataset}/{scenario}/r{repeat}f{fold}/recipes.log",
    benchmark:
        "logs/benchmarks/{dataset}/{scenario}/r{repeat}f{fold}/recipes.tsv"
    conda:
        "../../envs/recipes.yaml"
    threads: 2
    params:
        modality=lookup(dpath="datasets/{dataset}/modality", within=config),
        pool=config["pool"],
        gmm=config["gmm"],
        recipes=config["recipes"],
        seed=config["seed"],
        code=code("recipes.py"),
    script:
        "../scripts/recipes.py"


# One generation rule per scenario family: a family's methods decide which synthetic files it needs.
for _family in families():
    _generators = generators_for(config["methods"], _family)
    if not _generators:
        continue

    rule:
        name:
            f"generate_{_family}"
        input:
            pool=rules.recipes.output.pool,
            recipes=rules.recipes.output.recipes,
            bags=rules.bag_index.output.index,
        output:
            **{g: f"{RUN}/synthetic/{g}.h5" for g in _generators},
        log:
            "logs/{dataset}/{scenario}/r{repeat}f{fold}/generate.log",
        benchmark:
            "logs/benchmarks/{dataset}/{scenario}/r{repeat}f{fold}/generate.tsv"
        conda:
            "../../envs/recipes.yaml"
        wildcard_constraints:
            scenario=scenario_pattern(_family),
        params:
            classes=lookup(dpath="datasets/{dataset}/classes", within=config),
            config={k: config[k] for k in ("generate", "select", "remix", "psemix")},
            seed=config["seed"],
            code=code("generate.py"),
        script:
            "../scripts/generate.py"
