"""Synthetic-patient generation speed: vectorised and index-based, against a per-patient loop.

A pool of ``--patients`` real patients x ~500 instances x ``--d`` features (float32) in K clusters and
three class recipes (random Dirichlet concentrations, log-normal bag sizes around 500). Both sides
generate ``--bags`` synthetic patients from the same recipes, pool and clusters:

- the reference: a per-patient Python loop (Dirichlet, size, multinomial, one ``choice`` per cluster,
  a permutation) that materialises each synthetic bag's embeddings (``pool[rows]``; each bag is
  reduced to its mean and dropped, so memory stays bounded: the gather is paid, the storage is not);
- ours: :func:`recipe_mil.recipes.generate.generate_synthetic`, vectorised over patients, which
  returns index-based bags (CSR into the pool) and materialises nothing.

Both are checked for the same realised cluster proportions (within sampling noise). The last line is
the loop's time over ours.

Run: ``python benchmarks/generate.py [--bags 10000] [--patients 200] [--d 768] [--k 32]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _machine import bound_note, copy_gbs, load_note

from recipe_mil.recipes.generate import candidate_mask, generate_synthetic
from recipe_mil.recipes.recipes import BagSizeModel, ClassRecipe

CLASSES = ("aml", "healthy", "mds")


def make_inputs(n_patients: int, d: int, k: int, seed: int = 0):
    """Pool embeddings, clusters, per-row labels/cohorts and one recipe per class."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(400, 600, size=n_patients)
    patient_label = np.array(CLASSES)[np.arange(n_patients) % len(CLASSES)]
    labels = np.repeat(patient_label, sizes).astype(object)
    cohorts = np.full(len(labels), "target", dtype=object)
    clusters = rng.integers(0, k, size=len(labels))
    pool = rng.standard_normal((len(labels), d), dtype=np.float32)
    recipes = {
        c: ClassRecipe(
            alpha=list(rng.gamma(2.0, 1.0, size=k) * 3),
            mean_proportions=[],
            dirichlet_fit="mle",
            bag_size=BagSizeModel(float(np.log(500)), 0.1, 350, 700),
            cohort="target",
            patients=[],
            patient_proportions=[],
        )
        for c in CLASSES
    }
    return pool, clusters, labels, cohorts, recipes


def loop_generate(pool, recipes, clusters, labels, cohorts, n_per_class, seed):
    """The reference: one patient at a time, materialising each bag's embeddings."""
    rng = np.random.default_rng(seed)
    k = len(next(iter(recipes.values())).alpha)
    realised = {}
    for cls in sorted(recipes):
        allowed = candidate_mask("class", cls, labels, cohorts)
        members = [np.flatnonzero((clusters == j) & allowed) for j in range(k)]
        props = []
        for _ in range(n_per_class):
            p = rng.dirichlet(recipes[cls].alpha)
            size = recipes[cls].bag_size.sample(rng, 1)[0]
            counts = rng.multinomial(size, p)
            rows = np.concatenate(
                [rng.choice(members[j], size=c, replace=c > len(members[j])) for j, c in enumerate(counts) if c]
            )
            bag = pool[rng.permutation(rows)]  # materialised synthetic patient
            bag.mean(axis=0)
            props.append(np.bincount(clusters[rows], minlength=k) / len(rows))
        realised[cls] = np.mean(props, axis=0)
    return realised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", type=int, default=10_000)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pool, clusters, labels, cohorts, recipes = make_inputs(args.patients, args.d, args.k)
    n_per_class = args.bags // len(CLASSES)
    print(f"pool: {len(pool)} instances x {args.d} ({pool.nbytes / 2**20:.0f} MiB), K={args.k}")
    print(f"generating {n_per_class * len(CLASSES)} synthetic patients of ~500 instances")

    t = time.perf_counter()
    realised_loop = loop_generate(pool, recipes, clusters, labels, cohorts, n_per_class, seed=1)
    t_loop = time.perf_counter() - t
    best = np.inf
    for _ in range(args.repeats):
        t = time.perf_counter()
        syn = generate_synthetic(recipes, clusters, labels, cohorts, n_per_class=n_per_class, seed=1)
        best = min(best, time.perf_counter() - t)
    sizes = np.diff(syn.indptr)
    print(f"per-patient loop, materialised: {t_loop:.2f} s")
    print(f"ours, vectorised, index-based: {best:.3f} s (best of {args.repeats}); {syn.indices.size} indices")
    print(load_note())
    # neither side computes much: the loop gathers every synthetic instance's features (read + write), ours writes
    # one index per instance; the bound is those bytes at the machine's copy bandwidth
    gbs = copy_gbs()
    n = syn.indices.size
    print(f"loop (gather): {bound_note(t_loop, nbytes=2 * n * args.d * 4, gbs=gbs)}")
    print(f"ours (indices): {bound_note(best, nbytes=n * syn.indices.itemsize, gbs=gbs)}")
    for cls in sorted(recipes):
        bags = np.flatnonzero(syn.label == cls)
        ours = np.mean([np.bincount(clusters[syn.bag(i)], minlength=args.k) / sizes[i] for i in bags], axis=0)
        gap = np.abs(ours - realised_loop[cls]).max()
        print(f"class {cls}: max gap between the two realised mean cluster proportions {gap:.4f}")
        assert gap < 0.01
        assert all((labels[syn.bag(i)] == cls).all() for i in bags[:100])
    print(f"generate_speedup_vs_loop: {t_loop / best:.1f}")


if __name__ == "__main__":
    main()
