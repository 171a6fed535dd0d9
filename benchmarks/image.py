"""Image embedding throughput: crops per second for ``morphology`` and ``dinobloom-s`` (random weights).

Simulated 96-px crops are written as PNG to a temporary patient folder and embedded
through :meth:`Encoder.embed_folder` (reading, preprocessing and inference: what one
``embed`` job does). DinoBloom-S gets a random checkpoint in the official layout
(``teacher`` / ``backbone.`` keys plus a head); its loading time is reported apart.
Runs on the CPU, and also on the GPU (bf16 autocast) when ``torch.cuda.is_available()``.

Usage: ``python benchmarks/image.py [--n-morphology 300] [--n-vit 32] [--n-vit-gpu 2048]``.
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

from recipe_mil.embed.image import ImageEmbedParams, create_dinobloom_model, load_encoder
from recipe_mil.simulate.image import CELL_TYPES, render_cell, write_image


def make_folder(root: Path, n: int, *, seed: int = 0) -> Path:
    folder = root / f"crops_{n}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_image(render_cell(CELL_TYPES[i % len(CELL_TYPES)], rng), folder / f"c{i:05d}.png")
    return folder


def random_dinobloom_checkpoint(path: Path, name: str = "dinobloom-s") -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-morphology", type=int, default=300, help="crops for the morphology encoder")
    parser.add_argument("--n-vit", type=int, default=32, help="crops for DinoBloom-S on the CPU")
    parser.add_argument("--n-vit-gpu", type=int, default=2048, help="crops for DinoBloom-S on the GPU")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, cuda={torch.cuda.is_available()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        weights = root / "dinobloom-s.pth"
        random_dinobloom_checkpoint(weights)
        vit = ImageEmbedParams(encoder="dinobloom-s", weights=str(weights), num_workers=args.workers)
        vit_cpu = ImageEmbedParams(**{**vit.__dict__, "device": "cpu", "batch_size": 16})
        rate, load_s, dim = throughput(make_folder(root, args.n_vit), vit_cpu)
        detail = f"({args.n_vit} crops, batch 16), load {load_s:.2f} s"
        print(f"dinobloom-s (random weights, {dim}-d, 224 px) cpu: {rate:.1f} crops/s {detail}")
        print(f"image_crops_per_s_dinobloom_s_cpu: {rate:.2f}")
        if torch.cuda.is_available():
            vit_gpu = ImageEmbedParams(**{**vit.__dict__, "device": "cuda", "batch_size": 256, "num_workers": 8})
            rate, load_s, _ = throughput(make_folder(root, args.n_vit_gpu), vit_gpu, repeats=2)
            name = torch.cuda.get_device_name()
            print(f"dinobloom-s gpu ({name}, bf16): {rate:.1f} crops/s ({args.n_vit_gpu} crops), load {load_s:.2f} s")
            print(f"image_crops_per_s_dinobloom_s_gpu: {rate:.2f}")
        morph = ImageEmbedParams(encoder="morphology", num_workers=args.workers)
        rate, _, dim = throughput(make_folder(root, args.n_morphology), morph)
        print(f"morphology ({dim} features) cpu: {rate:.1f} crops/s ({args.n_morphology} crops)")
        print(f"image_crops_per_s_morphology: {rate:.2f}")


if __name__ == "__main__":
    main()
