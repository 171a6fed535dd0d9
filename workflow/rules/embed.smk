# Raw inputs to per-patient bags of instance embeddings: results/{dataset}/bags/{patient}.h5


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
        script:
            "../scripts/embed_scrna.py"


rule import_bag:
    input:
        bag=input_bag,
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
        label=lambda wildcards: SHEETS[wildcards.dataset]
        .set_index("patient")
        .at[wildcards.patient, "label"],
    script:
        "../scripts/import_bag.py"
