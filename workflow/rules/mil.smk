# Attention MIL on real (+ synthetic) training patients, tested on real held-out patients.
# real_only is trained first in each job: its model scores the recipe candidates.

# attention.npz: every test instance's attention (recipe_mil.io.attention); model.pt only with mil.keep_models
RESULT_FILES = ("predictions.tsv", "metrics.json", "attention.npz", "history.tsv") + (
    ("model.pt",) if config["mil"].get("keep_models", False) else ()
)


# One training rule per scenario family (its methods decide the outputs); one job per fold and training seed
# trains every method of the family from that seed.
for _family in families():
    _methods = scenario_methods(_family)

    rule:
        name:
            f"train_mil_{_family}"
        input:
            unpack(fold_synthetic_inputs),
            patients=rules.scenario_patients.output.patients,
            bags=rules.bag_index.output.index,
        output:
            **{f"{m}__{f.split('.')[0]}": f"{RUN}/{m}/s{{seed}}/{f}" for m in _methods for f in RESULT_FILES},
            **({"scored": selected_path(RUN, "{seed}")} if "recipe_selected" in _methods else {}),
        log:
            "logs/{dataset}/{scenario}/r{repeat}f{fold}/train_mil_s{seed}.log",
        benchmark:
            "logs/benchmarks/{dataset}/{scenario}/r{repeat}f{fold}/train_mil_s{seed}.tsv"
        conda:
            "../../envs/mil.yaml"
        threads: 1
        resources:
            gpu=1,
        wildcard_constraints:
            scenario=scenario_pattern(_family),
        params:
            classes=lookup(dpath="datasets/{dataset}/classes", within=config),
            methods=_methods,
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
        bags=rules.bag_index.output.index,
    output:
        realism=f"{RUN}/realism.tsv",
    log:
        "logs/{dataset}/{scenario}/r{repeat}f{fold}/realism.log",
    benchmark:
        "logs/benchmarks/{dataset}/{scenario}/r{repeat}f{fold}/realism.tsv"
    conda:
        "../../envs/recipes.yaml"
    params:
        max_instances=config["realism"]["max_instances"],
        permutations=config["realism"]["c2st_permutations"],
        seed=config["seed"],
        code=code("realism.py"),
    script:
        "../scripts/realism.py"
