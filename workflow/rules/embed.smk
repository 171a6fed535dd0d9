# Raw inputs to per-patient bags of instance embeddings: results/{dataset}/bags/{patient}.h5
# Bags of simulated datasets also carry the simulator's per-instance truth (truth_cell_type, truth_state).


for _dataset in embedded_by("embed_scrna"):

    rule:
        name:
            f"embed_scrna_{_dataset}"
        input:
            target=DATASETS[_dataset].cohort_file("target"),
            external=DATASETS[_dataset].cohort_file("external")
            if (SHEETS[_dataset]["cohort"] == "external").any()
            else [],
            sheet=dataset_sheet_path(_dataset),
        output:
            bags=bag_files(_dataset),
        log:
            f"logs/{_dataset}/embed_scrna.log",
        benchmark:
            f"logs/benchmarks/{_dataset}/embed_scrna.tsv"
        conda:
            "../../envs/embed-scrna.yaml"
        params:
            dataset=_dataset,
            scrna=config["datasets"][_dataset]["scrna"],
            seed=config["seed"],
            code=code("embed_scrna.py"),
            truth_columns=DATASETS[_dataset].truth_columns,
        threads: 2  # scanpy's PCA and scaling use BLAS threads (one job per dataset)
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
        "logs/benchmarks/{dataset}/import_bag/{patient}.tsv"
    conda:
        "../../envs/recipes.yaml"
    wildcard_constraints:
        dataset=alternation(embedded_by("import_bag")),
    params:
        label=patient_label,
        code=code("import_bag.py"),
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
        "logs/benchmarks/{dataset}/flow_panel.tsv"
    conda:
        "../../envs/embed-flow.yaml"
    wildcard_constraints:
        dataset=alternation(embedded_by("embed_flow")),
    params:
        paths=lambda wildcards: list(SHEETS[wildcards.dataset]["path"]),
        datasets=lambda wildcards: flow_datasets(wildcards.dataset),
        panel=lookup(dpath="datasets/{dataset}/flow/panel", within=config),
        code=code("flow_panel.py"),
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
        "logs/benchmarks/{dataset}/embed_flow/{patient}.tsv"
    conda:
        "../../envs/embed-flow.yaml"
    wildcard_constraints:
        dataset=alternation(embedded_by("embed_flow")),
    params:
        fcs=patient_path,
        fcs_dataset=patient_dataset,
        label=patient_label,
        flow=lookup(dpath="datasets/{dataset}/flow", within=config),
        seed=config["seed"],
        code=code("embed_flow.py"),
        simulated=lambda wildcards: DATASETS[wildcards.dataset].simulated,
    script:
        "../scripts/embed_flow.py"


# Image embedding: one job per batch of `image.patients_per_job` patients of a dataset, in sheet order, so that the
# encoder (a ViT-g checkpoint takes seconds to load) is loaded once per job. The job's outputs are the bags of its
# patients; a changed folder re-embeds its batch only, and patients appended to a sheet change only the last batch.
# A GPU is requested only for network encoders (dinobloom-*, timm:*); morphology runs on the CPU.
if embedded_by("embed_image"):
    from recipe_mil.embed.image import encoder_uses_gpu, patient_batches

# network encoders: a GPU, and memory and time for a large checkpoint (more on each retry)
NETWORK_ENCODER_RESOURCES = {
    "gpu": 1,
    "mem_mb": lambda wildcards, attempt: 16000 * attempt,
    "runtime": lambda wildcards, attempt: 120 * attempt,
}

for _dataset in embedded_by("embed_image"):
    _image = config["datasets"][_dataset]["image"]
    _rows = SHEETS[_dataset].set_index("patient", drop=False)
    _network = encoder_uses_gpu(_image["encoder"])
    for _batch, _patients in enumerate(patient_batches(list(_rows["patient"]), _image["patients_per_job"])):

        rule:
            name:
                f"embed_image_{_dataset}_{_batch}"
            input:
                raw=DATASETS[_dataset].patient_inputs(list(dict.fromkeys(_rows.loc[_patients, "path"]))),
                weights=[_image["weights"]] if _network else [],
            output:
                bags=[f"{RESULTS}/{_dataset}/bags/{p}.h5" for p in _patients],
            log:
                f"logs/{_dataset}/embed_image/batch{_batch}.log",
            benchmark:
                f"logs/benchmarks/{_dataset}/embed_image/batch{_batch}.tsv"
            conda:
                "../../envs/embed-image.yaml"
            threads: 1
            resources:
                **(NETWORK_ENCODER_RESOURCES if _network else {}),
            params:
                patients=_patients,
                folders=list(_rows.loc[_patients, "path"]),
                labels=list(_rows.loc[_patients, "label"]),
                image={k: v for k, v in _image.items() if k != "patients_per_job"},
                simulated=DATASETS[_dataset].simulated,
                code=code("embed_image.py"),
            script:
                "../scripts/embed_image.py"


rule bag_index:
    input:
        bags=dataset_bags,
    output:
        index=f"{RESULTS}/{{dataset}}/bags/index.tsv",
    log:
        "logs/{dataset}/bag_index.log",
    benchmark:
        "logs/benchmarks/{dataset}/bag_index.tsv"
    conda:
        "../../envs/recipes.yaml"
    params:
        code=code("bag_index.py"),
    script:
        "../scripts/bag_index.py"
