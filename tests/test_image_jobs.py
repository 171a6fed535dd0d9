"""Image embedding jobs: a batch of patients per job, one encoder load per job, GPU only for network encoders.

The library function that one job runs (write_image_bags) is tested by counting encoder loads and weights-file
reads; the workflow test runs the rule on a tiny user sheet and checks the batches, the one load per job, and which
batches a changed folder or an appended patient re-embeds.
"""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import recipe_mil.embed.image.embed as image_embed
from recipe_mil.config_check import config_problems
from recipe_mil.embed.image import (
    ImageEmbedParams,
    ImageInputError,
    ImagePatient,
    encoder_uses_gpu,
    load_encoder,
    patient_batches,
    write_image_bag,
    write_image_bags,
)
from recipe_mil.io.bags import read_bag
from recipe_mil.simulate.image import ImageSimParams, simulate_image_cohort

REPO = Path(__file__).resolve().parents[1]
SMALL = ImageSimParams(
    classes=("healthy", "aml"),
    n_patients_per_class=2,
    crops_per_patient_mean=5,
    crops_per_patient_sd=0,
    min_crops_per_patient=4,
    max_crops_per_patient=6,
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> pd.DataFrame:
    return simulate_image_cohort(SMALL, tmp_path_factory.mktemp("crops"))


def patients_of(sheet: pd.DataFrame, out: Path) -> list[ImagePatient]:
    return [ImagePatient(r.patient, r.label, r.path, out / f"{r.patient}.h5") for r in sheet.itertuples()]


class LoadCounter:
    """Wraps a function and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def test_patient_batches_are_consecutive_and_stable_when_patients_are_appended():
    patients = [f"P{i}" for i in range(7)]
    assert patient_batches(patients, 3) == [["P0", "P1", "P2"], ["P3", "P4", "P5"], ["P6"]]
    assert patient_batches(patients, 1) == [[p] for p in patients]
    assert patient_batches(patients, 25) == [patients]
    assert len(patient_batches([f"P{i}" for i in range(200)], 25)) == 8  # the default: 200 patients, 8 jobs
    grown = patient_batches([*patients, "P7"], 3)
    assert grown[:2] == patient_batches(patients, 3)[:2] and grown[2] == ["P6", "P7"]  # only the last batch moves
    with pytest.raises(ValueError, match="at least 1"):
        patient_batches(patients, 0)


def test_only_network_encoders_use_a_gpu():
    assert not encoder_uses_gpu("morphology")
    assert encoder_uses_gpu("dinobloom-s") and encoder_uses_gpu("dinobloom-g") and encoder_uses_gpu("timm:resnet18")
    with pytest.raises(ValueError, match="unknown image encoder"):
        encoder_uses_gpu("resnet18")


def test_a_job_over_several_patients_loads_the_encoder_once(cohort, tmp_path, monkeypatch):
    """Counted twice: calls of load_encoder, and reads of the weights file (torch.load) behind it."""
    import timm

    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict(), tmp_path / "r18.pth")
    params = ImageEmbedParams(encoder="timm:resnet18", weights=str(tmp_path / "r18.pth"), image_size=64)
    loads = LoadCounter(image_embed.load_encoder)
    reads = LoadCounter(torch.load)
    monkeypatch.setattr(image_embed, "load_encoder", loads)
    monkeypatch.setattr(torch, "load", reads)
    patients = patients_of(cohort, tmp_path)
    counts = write_image_bags(patients, params)
    assert (loads.calls, reads.calls) == (1, 1) and len(patients) == 4

    reference = load_encoder(params)  # the same weights, loaded apart: every bag is its own folder's embedding
    for p, n in zip(patients, counts, strict=True):
        bag = read_bag(p.bag)
        feats, ids = reference.embed_folder(p.folder)
        assert (bag.patient, bag.label, bag.encoder, bag.n_instances) == (p.patient, p.label, "timm:resnet18", n)
        assert list(bag.instance_ids) == list(ids) and np.allclose(bag.features, feats, atol=1e-5)
    assert (loads.calls, reads.calls) == (1, 2)  # the reference above: one more file read, no other load

    # the per-patient function without a shared encoder loads once per patient: what the batch job avoids
    for p in patients:
        write_image_bag(p.folder, tmp_path / "again.h5", patient=p.patient, label=p.label, params=params)
    assert (loads.calls, reads.calls) == (1 + len(patients), 2 + len(patients))


def test_a_missing_or_empty_folder_fails_before_the_encoder_loads(cohort, tmp_path, monkeypatch):
    loads = LoadCounter(image_embed.load_encoder)
    monkeypatch.setattr(image_embed, "load_encoder", loads)
    (tmp_path / "empty").mkdir()
    patients = patients_of(cohort, tmp_path / "out")
    patients[1] = ImagePatient("P_missing", "aml", tmp_path / "nowhere", tmp_path / "out" / "P_missing.h5")
    patients[3] = ImagePatient("P_empty", "aml", tmp_path / "empty", tmp_path / "out" / "P_empty.h5")
    with pytest.raises(ImageInputError) as err:
        write_image_bags(patients, ImageEmbedParams())
    msg = str(err.value)
    assert msg.startswith("2 of 4 patient folder(s) cannot be used")
    assert f"patient P_missing ({tmp_path / 'nowhere'}): {tmp_path / 'nowhere'}: image folder does not exist" in msg
    assert f"patient P_empty ({tmp_path / 'empty'}): {tmp_path / 'empty'}: no image files" in msg
    assert loads.calls == 0 and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"more than once.*P000"):
        write_image_bags([patients[0], patients[0]], ImageEmbedParams())


def test_an_unusable_patient_is_named_and_the_others_are_written(cohort, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    good = sorted(Path(cohort.at[0, "path"]).iterdir())
    (folder / "a.png").write_bytes(good[0].read_bytes())
    (folder / "b.png").write_bytes(good[1].read_bytes()[:40])  # truncated
    patients = patients_of(cohort, tmp_path)
    patients[2] = ImagePatient("P_broken", "aml", folder, tmp_path / "P_broken.h5")
    with pytest.raises(ImageInputError) as err:
        write_image_bags(patients, ImageEmbedParams(strict=True))
    assert str(err.value).startswith("1 of 4 patient(s) could not be embedded:")
    assert f"patient P_broken ({folder}): {folder / 'b.png'}: cannot read image" in str(err.value)
    assert [p.bag.exists() for p in patients] == [True, True, False, True]
    # without strict, the truncated crop is skipped and counted, and the job succeeds
    assert write_image_bags(patients, ImageEmbedParams())[2] == 1


def test_a_network_encoder_without_weights_is_refused_before_any_job():
    schema = REPO / "workflow" / "schemas" / "config.schema.yaml"
    ds = {"modality": "image", "classes": ["a", "b"], "samples": "s.tsv"}
    no_weights = {"datasets": {"smear": {**ds, "image": {"encoder": "dinobloom-s"}}}}
    assert config_problems(no_weights, schema) == [
        "config: datasets.smear.image.encoder 'dinobloom-s' needs image.weights, a local weights file (nothing is "
        "downloaded); use encoder: morphology to run without weights"
    ]
    fine = {"datasets": {"smear": {**ds, "image": {"encoder": "dinobloom-s", "weights": "w.pth"}}}}
    assert config_problems(fine, schema) == []
    assert config_problems({"datasets": {"smear": {**ds, "image": {"patients_per_job": 8}}}}, schema) == []


def snakemake(work: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work)]
    cmd += ["--configfile", str(work / "config.yaml"), *args]
    res = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout + res.stderr


def planned_rules(out: str) -> list[str]:
    return sorted(re.findall(r"^(?:local)?rule (embed_image_\w+):$", out, flags=re.M))


def test_workflow_embeds_batches_loading_once_per_job_and_reruns_only_changed_batches(tmp_path):
    """5 patients, 2 per job: 3 jobs, one encoder load each; a changed folder re-embeds its batch only, and an
    appended patient only the last batch."""
    params = ImageSimParams(**{**SMALL.__dict__, "n_patients_per_class": 3})
    full = simulate_image_cohort(params, tmp_path / "crops")
    sheet = full.iloc[:5]
    sheet.to_csv(tmp_path / "smear.tsv", sep="\t", index=False)
    ds = {"modality": "image", "classes": ["healthy", "aml"], "samples": str(tmp_path / "smear.tsv")}
    # Snakemake's own per-job output (the compact console shows no rule blocks), read by planned_rules
    config = {
        "datasets": {"smear": {**ds, "image": {"patients_per_job": 2}}},
        "splits": {"n_folds": 2},
        "console": "snakemake",
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    bags = [f"results/smear/bags/{p}.h5" for p in sheet["patient"]]
    out = snakemake(tmp_path, "--cores", "2", "--workflow-profile", str(REPO / "profiles" / "ci"), *bags)
    assert planned_rules(out) == ["embed_image_smear_0", "embed_image_smear_1", "embed_image_smear_2"]
    for batch, patients in enumerate(patient_batches(list(sheet["patient"]), 2)):
        log = (tmp_path / f"logs/smear/embed_image/batch{batch}.log").read_text()
        assert log.count("encoder morphology ready") == 1, log  # one load per job
        assert "encoder morphology ready in " in log and f"for {len(patients)} patient(s)" in log
        assert re.search(rf"job: {len(patients)} of {len(patients)} patient\(s\), \d+ crops with morphology", log)
        for p in patients:
            assert read_bag(tmp_path / f"results/smear/bags/{p}.h5").patient == p
    assert "Nothing to be done" in snakemake(tmp_path, "-n", *bags)

    # a new crop in the first patient's folder and a sixth patient appended to the sheet
    first = Path(sheet.at[0, "path"])
    (first / "zz_new.png").write_bytes(next(first.iterdir()).read_bytes())
    full.to_csv(tmp_path / "smear.tsv", sep="\t", index=False)
    bags.append(f"results/smear/bags/{full.iloc[5]['patient']}.h5")
    assert planned_rules(snakemake(tmp_path, "-n", *bags)) == ["embed_image_smear_0", "embed_image_smear_2"]
