"""MIL training speed: padded, masked batches from one feature matrix against a batch-1 loop.

A simulated cohort of ``--bags`` bags x ~500 instances x ``--d`` features (three classes whose bags
mix class-specific instance clusters) lives in one float32 matrix with row offsets per bag. Both
sides train the same gated-attention model from the same initial weights for ``--epochs`` epochs
(every instance used, AdamW, lr 5e-4):

- the reference (SCEMILA style): one bag per forward/backward pass, gradients accumulated over
  ``--batch`` bags before each optimiser step, each bag's features sliced from the same matrix;
- ours: :func:`recipe_mil.mil.train.fit_mil` with ``batch_size=--batch``: one padded, masked batch
  per optimiser step, gathered from the shared matrix (kept on the GPU when training there).

Same bags per epoch, same number of optimiser steps. Prints the seconds per epoch of each and both
final training losses (they must agree within noise), on the CPU and, where CUDA is present, on the
GPU. The last line is the CPU epoch-time ratio (batch-1 loop over ours).

Run: ``python benchmarks/mil.py [--bags 200] [--d 768] [--epochs 3] [--batch 16]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from _machine import bound_note, load_note, matmul_gflops

from recipe_mil.mil.data import BagCollection, balanced_epoch
from recipe_mil.mil.model import GatedAttentionMIL
from recipe_mil.mil.train import TrainConfig, fit_mil


def make_bags(n_bags: int, d: int, seed: int = 0) -> BagCollection:
    """Three classes; each bag mixes 6 instance clusters with class-dependent proportions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, size=(6, d)).astype(np.float32)
    labels = np.arange(n_bags) % 3
    sizes = rng.integers(400, 600, size=n_bags)
    feats = []
    for lab, n in zip(labels, sizes, strict=True):
        p = np.full(6, 0.1)
        p[lab * 2 : lab * 2 + 2] += 0.2
        comp = rng.choice(6, size=n, p=p / p.sum())
        feats.append(centres[comp] + rng.normal(0, 1, size=(n, d)).astype(np.float32))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return BagCollection.from_offsets(np.concatenate(feats), offsets, labels, [f"B{i}" for i in range(n_bags)])


def batch1_loop(bags: BagCollection, config: TrainConfig, device: torch.device) -> float:
    """Train one bag at a time with gradient accumulation; return the last epoch's mean loss."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = GatedAttentionMIL(bags.dim, 3, hidden=config.hidden, attention_dim=config.attention_dim).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    feats = torch.from_numpy(bags.features)
    for _ in range(config.epochs):
        ids = balanced_epoch(bags.labels, len(bags), rng)
        total = 0.0
        for start in range(0, len(ids), config.batch_size):
            chunk = ids[start : start + config.batch_size]
            opt.zero_grad(set_to_none=True)
            for i in chunk:
                x = feats[torch.from_numpy(bags.bag_indices[i])][None].to(device)
                mask = torch.ones(x.shape[:2], dtype=torch.bool, device=device)
                y = torch.tensor([int(bags.labels[i])], device=device)
                loss = F.cross_entropy(model(x, mask)[0], y)
                (loss / len(chunk)).backward()
                total += loss.item()
            opt.step()
        last = total / len(ids)
    return last


def epoch_flops(bags: BagCollection, config: TrainConfig, n_classes: int = 3) -> float:
    """Operations of one training epoch: forward and backward (about twice the forward) over every instance.

    Forward per instance: the encoder ``d x hidden``, the two gates ``hidden x attention_dim`` and the score, 2
    operations per multiply-add; the classifier runs once per bag and is left out.
    """
    h, a = config.hidden, config.attention_dim
    per_instance = 2 * (bags.dim * h + 2 * h * a + a)
    return 3.0 * per_instance * bags.features.shape[0]


def timed(fn, device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


def compare(bags: BagCollection, config: TrainConfig, device: torch.device) -> float:
    """Time both on one device; print and return the epoch-time ratio."""
    t_ref, loss_ref = timed(lambda: batch1_loop(bags, config, device), device)
    t_ours, fit = timed(lambda: fit_mil(bags, None, 3, config), device)
    loss_ours = fit.history[-1]["train_loss"]
    print(f"[{device}] batch-1 loop + accumulation: {t_ref / config.epochs:.2f} s/epoch, final loss {loss_ref:.4f}")
    print(
        f"[{device}] ours, padded batches of {config.batch_size}: {t_ours / config.epochs:.2f} s/epoch, "
        f"final loss {loss_ours:.4f} {load_note()}"
    )
    if device.type == "cpu":
        flops = epoch_flops(bags, config)
        gflops = matmul_gflops("float32")
        print(f"[cpu] batch-1 loop per epoch: {bound_note(t_ref / config.epochs, flops=flops, gflops=gflops)}")
        print(f"[cpu] ours per epoch: {bound_note(t_ours / config.epochs, flops=flops, gflops=gflops)}")
    return t_ref / t_ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", type=int, default=200)
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    bags = make_bags(args.bags, args.d)
    print(f"{len(bags)} bags, {bags.features.shape[0]} instances x {bags.dim} ({bags.features.nbytes / 2**20:.0f} MiB)")
    config = TrainConfig(
        hidden=128, attention_dim=64, epochs=args.epochs, batch_size=args.batch, max_instances=None, seed=0
    )
    cpu = torch.device("cpu")
    ratio_cpu = compare(bags, TrainConfig(**{**config.__dict__, "device": "cpu"}), cpu)
    if torch.cuda.is_available():
        gpu_config = TrainConfig(**{**config.__dict__, "device": "cuda", "batch_size": max(args.batch, 64)})
        ratio = compare(bags, gpu_config, torch.device("cuda"))
        print(f"mil_epoch_speedup_vs_batch1_gpu: {ratio:.1f}")
    print(f"mil_epoch_speedup_vs_batch1: {ratio_cpu:.1f}")


if __name__ == "__main__":
    main()
