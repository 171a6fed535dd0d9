"""Scale run: a 5,000,000-instance x 768-d pool through pooling, PCA, GMM, recipes and generation.

Simulates ``--patients`` bag files (``--instances`` instances in all, ~500 per patient, ``--d``
features, float32: 15.4 GB for the defaults) whose instances come from 24 cell types in a 32-d latent
space mapped linearly to d dimensions plus noise, in three classes with different type proportions.
Then, reading the bags from disk a block at a time (never the whole pool in memory):

1. pooling: the leakage gate (:func:`recipe_mil.recipes.pool.pool_patients`) and the row index;
2. PCA: one streaming pass for the standardisation and covariance (:func:`fit_projection`), a
   second for the projection to ``--n-pcs`` components (float32, the only pool-sized array kept);
3. GMM: the torch engine, K by BIC on a seeded subsample, the chosen K refitted on every row
   starting from its subsample fit (:func:`recipe_mil.recipes.gmm.fit_gmm`);
4. recipes: per-patient cluster counts and the Dirichlet-multinomial fit per class;
5. generation: ``--synthetic`` synthetic patients, index-based.

Prints each stage's wall time, the process's peak resident memory and the cluster-to-cell-type
agreement (a check that the run did what it should). The bag files are kept in ``--workdir`` for
a rerun with ``--reuse`` (they are removed with ``--clean``).

With ``--workflow-path`` it runs, on the same bag files, the workflow's own steps instead, on one fold
(8 of every 10 patients train, 1 validation, 1 test): the recipes step
(:func:`recipe_mil.recipes.pipeline.fit_fold_recipes`: the pool as a row index into the bags, the projection
streamed from them block by block, as above), generation (:func:`recipe_mil.augment.make_synthetic`, generator
``recipe``, ``--synthetic`` patients), then the MIL step's loading (:meth:`recipe_mil.experiment.FoldData.load`
and the pool's rows, :func:`recipe_mil.recipes.pool.pool_rows`: above 1 GiB the bag files are read a batch at a
time), one training epoch on real + synthetic bags with validation (:func:`recipe_mil.experiment.fit_on`) and
the prediction of the test patients. Each stage prints its wall time, its own peak resident memory (the
kernel's high-water mark, reset before each stage) and the load average.

With ``--simulate-only`` it writes the bags and a sample sheet for the workflow's ``bags`` modality and stops
(``config/scale_1m.yaml`` runs the workflow end to end on them).

Run: ``python benchmarks/scale.py [--instances 5000000] [--patients 10000] [--d 768]``
(about 20 GB of free disk for the defaults).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from _machine import load_note
from sklearn.metrics import adjusted_rand_score

from recipe_mil.augment import GeneratorInput, make_synthetic
from recipe_mil.experiment import FoldData, evaluate_on_test, fit_on, synthetic_collection
from recipe_mil.io.bags import read_bag, write_bag
from recipe_mil.io.tables import read_tsv
from recipe_mil.mil import TrainConfig
from recipe_mil.recipes.generate import generate_synthetic
from recipe_mil.recipes.gmm import fit_gmm
from recipe_mil.recipes.pipeline import RecipeConfig, fit_fold_recipes, learn_recipes
from recipe_mil.recipes.pool import bag_chunks, fit_projection, pool_patients, pool_rows

CLASSES = ("aml", "healthy", "mds")
N_TYPES = 24


def simulate(workdir: Path, n_patients: int, n_instances: int, d: int, seed: int = 0) -> pd.DataFrame:
    """Write one bag file per patient; return the sheet (patient, label, cohort, role, path)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(0, 2.0, size=(N_TYPES, 32)).astype(np.float32)
    mixing = (rng.normal(0, 1, size=(32, d)) / np.sqrt(32)).astype(np.float32)
    class_alpha = {c: rng.gamma(2.0, 1.0, size=N_TYPES) * 8 for c in CLASSES}
    sizes = rng.multinomial(n_instances - 300 * n_patients, np.full(n_patients, 1 / n_patients)) + 300
    rows = []
    t = time.perf_counter()
    for i in range(n_patients):
        label = CLASSES[i % len(CLASSES)]
        types = rng.choice(N_TYPES, size=sizes[i], p=rng.dirichlet(class_alpha[label]))
        z = latent[types] + rng.standard_normal((sizes[i], 32), dtype=np.float32) * 0.5
        x = z @ mixing + rng.standard_normal((sizes[i], d), dtype=np.float32) * 0.3
        path = workdir / f"P{i:05d}.h5"
        ids = np.array([f"{t_}:{j}" for j, t_ in enumerate(types)])  # the true cell type rides in the id
        write_bag(path, x, ids, patient=f"P{i:05d}", label=label, encoder="simulated")
        rows.append((f"P{i:05d}", label, "target", "train", str(path)))
        if (i + 1) % 1000 == 0:
            print(f"  simulated {i + 1}/{n_patients} bags ({time.perf_counter() - t:.0f} s)", flush=True)
    return pd.DataFrame(rows, columns=["patient", "label", "cohort", "role", "path"])


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (on a shared machine, wall time is not the cost)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reset_stage_peak() -> None:
    """Reset the kernel's resident high-water mark of this process (Linux), so the next stage reports its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def stage_peak_gib() -> float:
    """Peak resident memory since :func:`reset_stage_peak` (VmHWM), or the process's peak where unreadable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return peak_gib()


def workflow_path(sheet: pd.DataFrame, args: argparse.Namespace) -> None:
    """The workflow's recipes, generation and MIL steps on one fold of the simulated bags (see the module doc)."""
    sheet = sheet.assign(
        role=np.select([np.arange(len(sheet)) % 10 == 8, np.arange(len(sheet)) % 10 == 9], ["val", "test"], "train")
    )
    paths = dict(zip(sheet["patient"], sheet["path"], strict=True))
    stages: list[tuple[str, float, float, str]] = []
    cpu = [cpu_seconds()]

    def stage(name: str, t: float) -> None:
        stages.append((name, time.perf_counter() - t, stage_peak_gib(), load_note()))
        cpu.append(cpu_seconds())
        print(
            f"  {name}: {stages[-1][1]:.1f} s wall, {cpu[-1] - cpu[-2]:.1f} s CPU, peak {stages[-1][2]:.2f} GiB "
            f"{stages[-1][3]}",
            flush=True,
        )
        reset_stage_peak()

    reset_stage_peak()
    t = time.perf_counter()
    config = RecipeConfig(
        n_components=args.k, n_pcs=args.n_pcs, subsample=args.subsample, n_init=1, max_iter=100, engine="torch"
    )
    fold = fit_fold_recipes(sheet, paths, config, seed=0)
    stage(f"recipes (pool of {fold.pool.n_obs} rows streamed from the bags, K={fold.gmm.n_components})", t)

    t = time.perf_counter()
    inp = GeneratorInput(
        pool=fold.pool,
        recipes=fold.recipes,
        pooled_recipe=fold.pooled,
        classes=list(CLASSES),
        config={"generate": {"n_per_class": args.synthetic // len(CLASSES)}},
    )
    syn = make_synthetic("recipe", inp, seed=0)
    stage(f"generation ({len(syn)} synthetic patients, {len(syn.indices)} instance indices)", t)

    t = time.perf_counter()
    data = FoldData.load(sheet, paths, list(CLASSES))
    pool_x = pool_rows(fold.pool, paths)
    synthetic = synthetic_collection(syn, pool_x, list(CLASSES))
    where = "in memory" if isinstance(data.train.features, np.ndarray) else "read from the bag files per batch"
    stage(f"MIL loading (features {where})", t)

    t = time.perf_counter()
    train = TrainConfig(epochs=1, min_epochs=1, device="cpu", seed=0)
    trained = fit_on(data, train, synthetic=synthetic)
    n_rows = sum(len(ix) for ix in data.train.bag_indices) + sum(len(ix) for ix in synthetic.bag_indices)
    stage(
        f"MIL epoch ({trained.n_real} real + {trained.n_synthetic} synthetic bags, {n_rows} instances, "
        f"max_instances={train.max_instances}; validation on {len(data.val)} bags)",
        t,
    )

    t = time.perf_counter()
    _, metrics, _ = evaluate_on_test(trained.fit.model, data, device="cpu")
    stage(f"MIL prediction ({len(data.test)} test bags, balanced accuracy {metrics['balanced_accuracy']:.2f})", t)
    peak = max(s[2] for s in stages)  # the stages' own peaks (resetting the high-water mark resets ru_maxrss too)
    print(f"workflow path total {sum(s[1] for s in stages):.1f} s; peak resident memory {peak:.2f} GiB")
    print(f"scale_peak_rss_gib: {peak:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=5_000_000)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--n-pcs", type=int, default=32)
    parser.add_argument("--k", type=int, nargs="+", default=[16, 24, 32])
    parser.add_argument("--subsample", type=int, default=200_000)
    parser.add_argument("--synthetic", type=int, default=10_000)
    parser.add_argument("--chunk-rows", type=int, default=262_144)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recipe_mil_scale"))
    parser.add_argument("--reuse", action="store_true", help="reuse the bag files of an earlier run")
    parser.add_argument("--clean", action="store_true", help="remove the bag files at the end")
    parser.add_argument(
        "--simulate-only",
        action="store_true",
        help="write the bags and a workflow sample sheet (samples.tsv: patient, label, cohort, path) and stop",
    )
    parser.add_argument(
        "--workflow-path",
        action="store_true",
        help="instead, run the workflow's recipes, generation and one MIL epoch (with prediction) on one fold",
    )
    args = parser.parse_args()
    times: dict[str, float] = {}

    sheet_path = args.workdir / "sheet.tsv"
    t = time.perf_counter()
    if args.reuse and sheet_path.exists():
        sheet = read_tsv(sheet_path)
    else:
        shutil.rmtree(args.workdir, ignore_errors=True)
        args.workdir.mkdir(parents=True)
        sheet = simulate(args.workdir, args.patients, args.instances, args.d)
        sheet.to_csv(sheet_path, sep="\t", index=False)
    times["simulate + write bags"] = time.perf_counter() - t
    if args.simulate_only:
        sheet[["patient", "label", "cohort", "path"]].to_csv(args.workdir / "samples.tsv", sep="\t", index=False)
        print(f"wrote {len(sheet)} bags and {args.workdir / 'samples.tsv'} in {times['simulate + write bags']:.0f} s")
        return

    if args.workflow_path:
        workflow_path(sheet, args)
        if args.clean:
            shutil.rmtree(args.workdir, ignore_errors=True)
        return

    t = time.perf_counter()
    pooled = pool_patients(sheet)
    paths = pooled["path"].tolist()
    bags = [read_bag(p, features=False) for p in paths]
    sizes = np.array([len(b.instance_ids) for b in bags])
    truth = np.concatenate([[int(i.split(":")[0]) for i in b.instance_ids] for b in bags])
    obs = pd.DataFrame(
        {
            "patient": pd.Categorical(np.repeat(pooled["patient"].to_numpy(), sizes)),
            "label": pd.Categorical(np.repeat(pooled["label"].to_numpy(), sizes)),
            "cohort": pd.Categorical(np.repeat(pooled["cohort"].to_numpy(), sizes)),
        }
    )
    obs.index = obs.index.astype(str)
    times["pooling (row index)"] = time.perf_counter() - t
    n = int(sizes.sum())
    print(f"pool: {n} instances of {len(pooled)} patients x {args.d} ({n * args.d * 4 / 1e9:.1f} GB on disk)")

    t = time.perf_counter()
    projection = fit_projection(bag_chunks(paths, chunk_rows=args.chunk_rows), standardize=True, n_pcs=args.n_pcs)
    times["PCA pass 1 (moments)"] = time.perf_counter() - t
    t = time.perf_counter()
    z = np.empty((n, args.n_pcs), dtype=np.float32)
    start = 0
    for block in bag_chunks(paths, chunk_rows=args.chunk_rows):
        z[start : start + len(block)] = projection.transform(block, dtype=np.float32)
        start += len(block)
    times["PCA pass 2 (projection)"] = time.perf_counter() - t

    t = time.perf_counter()
    gmm = fit_gmm(z, args.k, subsample=args.subsample, n_init=1, max_iter=100, engine="torch", device="auto", seed=0)
    times["GMM (BIC grid on subsample + full refit)"] = time.perf_counter() - t
    t = time.perf_counter()
    clusters = gmm.predict(z)
    times["GMM assignment of every row"] = time.perf_counter() - t
    print(f"GMM: K={gmm.n_components} by BIC {gmm.bic}; refit {gmm.model.n_iter_} iterations")

    t = time.perf_counter()
    recipes = learn_recipes(ad.AnnData(obs=obs), clusters, gmm.n_components)
    times["recipes"] = time.perf_counter() - t

    t = time.perf_counter()
    labels = obs["label"].to_numpy().astype(str)
    cohorts = obs["cohort"].to_numpy().astype(str)
    times["label arrays"] = time.perf_counter() - t
    t = time.perf_counter()
    syn = generate_synthetic(recipes, clusters, labels, cohorts, n_per_class=args.synthetic // len(recipes), seed=0)
    times["generation"] = time.perf_counter() - t
    print(f"generated {len(syn)} synthetic patients, {syn.indices.size} instance indices")
    every = max(1, n // 500_000)
    ari = adjusted_rand_score(truth[::every], clusters[::every])
    print(f"clusters vs simulated cell types: adjusted Rand index {ari:.3f} (every {every}th instance)")
    for stage, sec in times.items():
        print(f"  {stage}: {sec:.1f} s")
    total = sum(v for k, v in times.items() if not k.startswith("simulate"))
    print(f"total after simulation: {total:.1f} s; peak resident memory {peak_gib():.2f} GiB")
    if args.clean:
        shutil.rmtree(args.workdir, ignore_errors=True)
    print(f"scale_peak_rss_gib: {peak_gib():.2f}")


if __name__ == "__main__":
    main()
