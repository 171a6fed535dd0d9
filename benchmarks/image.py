"""Image embedding throughput: crops per second for ``morphology`` and DinoBloom (random weights).

Two measurements:

- *encoder* (``--mode encoder``): simulated 96-px crops are written as PNG to a temporary patient
  folder and embedded through :meth:`Encoder.embed_folder` (reading, preprocessing and inference),
  best of the repeats after a warm-up; the loading time is reported apart.
- *whole job* (``--mode job``): what one workflow job does, from nothing: :func:`write_image_bags`
  over ``--job-patients`` folders of ``--job-crops`` crops, encoder load, reading and bag writing
  included, once; compared with one job per patient (:func:`write_image_bag` without a shared
  encoder, so the encoder is loaded for every patient, as before batching).

DinoBloom gets a random checkpoint in the official layout (``teacher`` / ``backbone.`` keys plus a
head). Runs on the CPU, and also on the GPU (bf16 autocast) when ``torch.cuda.is_available()``.
Every figure is printed with the machine's load average: on a shared machine the figures are not
results; measure on an idle one.

Usage: ``python benchmarks/image.py [--mode all|encoder|job] [--n-morphology 300] [--n-vit 32]
[--n-vit-gpu 2048] [--job-patients 8] [--job-crops 16] [--job-encoder dinobloom-s]``.
The last line is ``image_crops_per_s_morphology: X``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import load_note

from recipe_mil.embed.image import (
    ImageEmbedParams,
    ImagePatient,
    create_dinobloom_model,
    load_encoder,
    write_image_bag,
    write_image_bags,
)
from recipe_mil.simulate.image import CELL_TYPES, render_cell, write_image


def make_folder(root: Path, n: int, *, seed: int = 0, name: str | None = None) -> Path:
    folder = root / (name or f"crops_{n}")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_image(render_cell(CELL_TYPES[i % len(CELL_TYPES)], rng), folder / f"c{i:05d}.png")
    return folder


def random_dinobloom_checkpoint(path: Path, name: str = "dinobloom-s") -> None:
    """Write a DinoBloom checkpoint with random weights in the official layout."""
    with torch.device("cpu"):
        model = create_dinobloom_model(name)
    teacher = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    teacher["backbone.mask_token"] = torch.zeros(1, model.embed_dim)
    teacher["dino_head.mlp.0.weight"] = torch.zeros(8, model.embed_dim)
    torch.save({"teacher": teacher}, path)


def throughput(folder: Path, params: ImageEmbedParams, *, repeats: int = 1) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    enc = load_encoder(params)
    load_s = time.perf_counter() - t0
    enc.embed_folder(folder)  # warm-up (first batch, lazy imports, CUDA context)
    best = float("inf")
    n = 0
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        feats, _ = enc.embed_folder(folder)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        n = feats.shape[0]
    return n / best, load_s, feats.shape[1]


def whole_job(root: Path, params: ImageEmbedParams, n_patients: int, n_crops: int) -> tuple[float, float, float]:
    """Crops/s of one batch job (one load) and of one job per patient (a load each), and the load time alone.

    Both are timed after a warm-up (imports, first batch), which a fresh job process pays once either way."""
    patients = [
        ImagePatient(f"P{i:03d}", "x", make_folder(root, n_crops, seed=i, name=f"P{i:03d}"), root / f"P{i:03d}.h5")
        for i in range(n_patients)
    ]
    total = n_patients * n_crops
    load_encoder(params).embed_folder(patients[0].folder)  # warm-up: lazy imports, first batch, CUDA context
    t0 = time.perf_counter()
    load_encoder(params)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_image_bags(patients, params)
    batch = total / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for p in patients:
        write_image_bag(p.folder, p.bag, patient=p.patient, label=p.label, params=params)
    per_patient = total / (time.perf_counter() - t0)
    return batch, per_patient, load_s


def encoder_mode(root: Path, args: argparse.Namespace, vit: ImageEmbedParams) -> None:
    vit_cpu = ImageEmbedParams(**{**vit.__dict__, "device": "cpu", "batch_size": 16})
    rate, load_s, dim = throughput(make_folder(root, args.n_vit), vit_cpu)
    detail = f"({args.n_vit} crops, batch 16), load {load_s:.2f} s"
    print(f"{vit.encoder} (random weights, {dim}-d, 224 px) cpu: {rate:.1f} crops/s {detail} {load_note()}")
    print(f"image_crops_per_s_{vit.encoder.replace('-', '_')}_cpu: {rate:.2f}")
    if torch.cuda.is_available():
        vit_gpu = ImageEmbedParams(**{**vit.__dict__, "device": "cuda", "batch_size": 256, "num_workers": 8})
        rate, load_s, _ = throughput(make_folder(root, args.n_vit_gpu), vit_gpu, repeats=2)
        name = torch.cuda.get_device_name()
        detail = f"({args.n_vit_gpu} crops), load {load_s:.2f} s"
        print(f"{vit.encoder} gpu ({name}, bf16): {rate:.1f} crops/s {detail} {load_note()}")
        print(f"image_crops_per_s_{vit.encoder.replace('-', '_')}_gpu: {rate:.2f}")


def job_mode(root: Path, args: argparse.Namespace, vit: ImageEmbedParams) -> None:
    runs = [("cpu", ImageEmbedParams(encoder="morphology", num_workers=args.workers))]
    runs.append(("cpu", ImageEmbedParams(**{**vit.__dict__, "device": "cpu", "batch_size": 16})))
    if torch.cuda.is_available():
        runs.append(("gpu", ImageEmbedParams(**{**vit.__dict__, "device": "cuda", "batch_size": 256})))
    shape = f"{args.job_patients} patients x {args.job_crops} crops"
    for i, (where, params) in enumerate(runs):
        batch, per_patient, load_s = whole_job(root / f"job{i}", params, args.job_patients, args.job_crops)
        print(
            f"{params.encoder} {where} whole job ({shape}, encoder load {load_s:.2f} s included): {batch:.1f} crops/s; "
            f"one job per patient (a load each): {per_patient:.1f} crops/s {load_note()}"
        )
        print(f"image_job_crops_per_s_{params.encoder.replace('-', '_')}_{where}: {batch:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("all", "encoder", "job"), default="all", help="what to measure")
    parser.add_argument("--n-morphology", type=int, default=300, help="crops for the morphology encoder")
    parser.add_argument("--n-vit", type=int, default=32, help="crops for DinoBloom on the CPU")
    parser.add_argument("--n-vit-gpu", type=int, default=2048, help="crops for DinoBloom on the GPU")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--job-patients", type=int, default=8, help="patients of the whole-job measurement")
    parser.add_argument("--job-crops", type=int, default=16, help="crops per patient of the whole-job measurement")
    parser.add_argument(
        "--job-encoder",
        default="dinobloom-s",
        choices=("dinobloom-s", "dinobloom-b", "dinobloom-l", "dinobloom-g"),
        help="DinoBloom size (random weights; a dinobloom-g checkpoint is 4.5 GB in the temporary folder)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, cuda={torch.cuda.is_available()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        weights = root / f"{args.job_encoder}.pth"
        random_dinobloom_checkpoint(weights, args.job_encoder)
        vit = ImageEmbedParams(encoder=args.job_encoder, weights=str(weights), num_workers=args.workers)
        if args.mode in ("all", "job"):
            job_mode(root, args, vit)
        if args.mode in ("all", "encoder"):
            encoder_mode(root, args, vit)
        morph = ImageEmbedParams(encoder="morphology", num_workers=args.workers)
        rate, _, dim = throughput(make_folder(root, args.n_morphology), morph)
        print(f"morphology ({dim} features) cpu: {rate:.1f} crops/s ({args.n_morphology} crops) {load_note()}")
        print(f"image_crops_per_s_morphology: {rate:.2f}")


if __name__ == "__main__":
    main()
