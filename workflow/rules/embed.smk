# Raw inputs to per-patient bags of instance embeddings: results/{dataset}/bags/{patient}.h5
# Bags of simulated datasets also carry the simulator's per-instance truth (truth_cell_type, truth_state).


for _dataset in SCRNA_DATASETS:

    rule:
        name:
            f"embed_scrna_{_dataset}"
        input:
            target=raw_path(_dataset, "target"),
            external=raw_path(_dataset, "external") if (SHEETS[_dataset]["cohort"] == "external").any() else [],
            sheet=dataset_sheet_path(_dataset),
        output:
            bags=bag_files(_dataset),
        log:
            f"logs/{_dataset}/embed_scrna.log",
        benchmark:
            f"benchmarks/{_dataset}/embed_scrna.tsv"
        conda:
            "../../envs/embed-scrna.yaml"
        params:
            dataset=_dataset,
            scrna=config["datasets"][_dataset]["scrna"],
            seed=config["seed"],
            truth_columns=SIMULATED_TRUTH_COLUMNS if "simulate" in config["datasets"][_dataset] else [],
        script:
            "../scripts/embed_scrna.py"


rule import_bag:
    input:
        bag=patient_path,
    output:
        bag=f"{RESULTS}/{{dataset}}/bags/{{patient}}.h5",
    log:
        "logs/{dataset}/import_bag/{patient}.log",
    benchmark:
        "benchmarks/{dataset}/import_bag/{patient}.tsv"
    conda:
        "../../envs/recipes.yaml"
    wildcard_constraints:
        dataset=alternation(BAGS_DATASETS),
    params:
        label=patient_label,
    script:
        "../scripts/import_bag.py"


rule flow_panel:
    input:
        files=flow_files,
    output:
        panel=f"{RESULTS}/{{dataset}}/flow_panel.tsv",
    log:
        "logs/{dataset}/flow_panel.log",
    benchmark:
        "benchmarks/{dataset}/flow_panel.tsv"
    conda:
        "../../envs/embed-flow.yaml"
    wildcard_constraints:
        dataset=alternation(FLOW_DATASETS),
    params:
        paths=lambda wildcards: list(SHEETS[wildcards.dataset]["path"]),
        panel=lambda wildcards: config["datasets"][wildcards.dataset]["flow"]["panel"],
    script:
        "../scripts/flow_panel.py"


rule embed_flow:
    input:
        raw=raw_input,
        panel=rules.flow_panel.output.panel,
    output:
        bag=f"{RESULTS}/{{dataset}}/bags/{{patient}}.h5",
    log:
        "logs/{dataset}/embed_flow/{patient}.log",
    benchmark:
        "benchmarks/{dataset}/embed_flow/{patient}.tsv"
    conda:
        "../../envs/embed-flow.yaml"
    wildcard_constraints:
        dataset=alternation(FLOW_DATASETS),
    params:
        fcs=patient_path,
        label=patient_label,
        flow=lambda wildcards: config["datasets"][wildcards.dataset]["flow"],
        seed=config["seed"],
        simulated=lambda wildcards: "simulate" in config["datasets"][wildcards.dataset],
    script:
        "../scripts/embed_flow.py"


rule embed_image:
    input:
        raw=raw_input,
    output:
        bag=f"{RESULTS}/{{dataset}}/bags/{{patient}}.h5",
    log:
        "logs/{dataset}/embed_image/{patient}.log",
    benchmark:
        "benchmarks/{dataset}/embed_image/{patient}.tsv"
    conda:
        "../../envs/embed-image.yaml"
    threads: 1
    resources:
        gpu=1,
    wildcard_constraints:
        dataset=alternation(IMAGE_DATASETS),
    params:
        folder=patient_path,
        label=patient_label,
        image=lambda wildcards: config["datasets"][wildcards.dataset]["image"],
        simulated=lambda wildcards: "simulate" in config["datasets"][wildcards.dataset],
    script:
        "../scripts/embed_image.py"
