"""The ``recipe-mil`` console script: synthetic patients and a final model for your cohort, without a study.

Subcommands (README "Command line"; docs/method.md §10):

``recipe-mil generate``
    A sheet of bag files (``patient``, ``label``, ``path``) and a number of synthetic patients per
    class (or ``--missing-class X --external sheet.tsv``) -> ``OUT/bags/synthetic_XXXX.h5``,
    ``OUT/samples.tsv`` and ``OUT/recipes.json``.
``recipe-mil train``
    A sheet of real patients (and optionally a synthetic sheet) -> ``model.pt``.
``recipe-mil predict``
    ``model.pt`` and a sheet of new patients -> a predictions TSV and an attention TSV.
``recipe-mil summarize``
    The per-run tables of a study's finished parts (``results/parts/<name>/``) -> the study's summary
    (:mod:`recipe_mil.study`).

Every step is a function of :mod:`recipe_mil.cohort`; seeds come from ``--seed`` (default 0), so the
same inputs give the same outputs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from recipe_mil.config import TrainConfig
from recipe_mil.io.tables import write_tsv

DEFAULT_MODEL = "model.pt"


def _generate(args: argparse.Namespace) -> None:
    from recipe_mil.cohort import generate_cohort, read_cohort_sheet
    from recipe_mil.recipes.pipeline import RecipeConfig

    if (args.missing_class is None) != (args.external is None):
        raise SystemExit("recipe-mil generate: --missing-class and --external go together")
    sheet = read_cohort_sheet(args.sheet)
    external = None if args.external is None else read_cohort_sheet(args.external, cohort="external")
    config = RecipeConfig(
        n_components=args.n_components[0] if len(args.n_components) == 1 else args.n_components,
        n_pcs=args.n_pcs or None,
        device=args.device,
    )
    cohort = generate_cohort(
        sheet,
        args.n_per_class,
        missing_class=args.missing_class,
        external=external,
        classes=args.classes,
        config=config,
        instance_source=args.instance_source,
        missing_class_source=args.missing_class_source,
        seed=args.seed,
    )
    out = cohort.write(args.out)
    counts = out.groupby("label").size()
    print(
        f"wrote {len(out)} synthetic patients ({', '.join(f'{c} {n}' for c, n in counts.items())}; "
        f"K={cohort.meta['n_clusters']}) to {args.out}"
    )


def _train(args: argparse.Namespace) -> None:
    from recipe_mil.cohort import read_cohort_sheet, train_final_model
    from recipe_mil.experiment import save_model

    sheet = read_cohort_sheet(args.sheet)
    synthetic = None if args.synthetic is None else read_cohort_sheet(args.synthetic)
    config = TrainConfig(
        **{name: getattr(args, name) for name, _, _ in TRAIN_OPTIONS}, seed=args.seed, device=args.device
    )
    log = logging.getLogger("recipe_mil.cli")
    model, classes = train_final_model(sheet, config, synthetic=synthetic, classes=args.classes, log=log.info)
    meta = {
        "classes": classes,
        "n_real": len(sheet),
        "n_synthetic": 0 if synthetic is None else len(synthetic),
        "seed": args.seed,
        "epochs": args.epochs,
    }
    save_model(model, args.out, meta=meta)
    print(f"trained on {meta['n_real']} real + {meta['n_synthetic']} synthetic patients; wrote {args.out}")


def _predict(args: argparse.Namespace) -> None:
    from recipe_mil.cohort import predict_cohort, read_cohort_sheet
    from recipe_mil.experiment import load_model, model_meta

    meta = model_meta(args.model)
    if "classes" not in meta:
        raise SystemExit(f"recipe-mil predict: {args.model} has no class names (train it with recipe-mil train)")
    sheet = read_cohort_sheet(args.sheet, labelled=False)
    pred, att = predict_cohort(load_model(args.model), list(meta["classes"]), sheet, device=args.device)
    attention = args.attention or str(Path(args.out).with_name(Path(args.out).stem + "_attention.tsv"))
    for path, frame in ((args.out, pred), (attention, att)):
        write_tsv(frame, path)
    print(f"predicted {len(pred)} patients: {args.out}; attention per instance: {attention}")


TRAIN_OPTIONS: tuple[tuple[str, type, float], ...] = tuple(
    (name, kind, getattr(TrainConfig, name))
    for name, kind in (("epochs", int), ("hidden", int), ("attention_dim", int), ("batch_size", int), ("lr", float))
)
"""``recipe-mil train`` options passed to :class:`recipe_mil.mil.TrainConfig`, with its defaults (the workflow's
``mil`` defaults: ``tests/test_config_defaults.py``)."""


def _summarize(args: argparse.Namespace) -> None:
    from recipe_mil.study import SummaryPaths, combine_parts, write_summary  # noqa: PLC0415

    tables = combine_parts(args.parts)
    if not len(tables["summary"]):
        raise ValueError(f"no runs in {', '.join(args.parts)}")
    n = write_summary(tables["summary"], tables["realism"], tables["recall"], SummaryPaths.in_folder(args.out))
    print(
        f"{len(tables['summary'])} runs from {len(args.parts)} parts, {n} comparisons: {Path(args.out) / 'summary.md'}"
    )


def _command(
    sub: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], None],
    summary: str,
    description: str,
    sheet_help: str,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=summary, description=description)
    parser.add_argument("sheet", help=sheet_help)
    parser.set_defaults(run=run)
    return parser


def _seed_and_device(parser: argparse.ArgumentParser, device_help: str) -> None:
    parser.add_argument("--device", default="cpu", help=device_help)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``recipe-mil``."""
    parser = argparse.ArgumentParser(
        prog="recipe-mil",
        description="Recipe-based synthetic patients for multiple instance learning on your own cohort "
        "(the study itself is the Snakemake workflow).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = _command(
        sub,
        "generate",
        _generate,
        "write synthetic patients as bag files",
        "Learn class recipes from every patient of a sheet of bag files and write synthetic patients "
        "(OUT/bags/*.h5 with a 'features' dataset, OUT/samples.tsv with labels and source patients, "
        "OUT/recipes.json). Relative bag paths are resolved against the sheet's folder.",
        "TSV sheet: patient, label, path (.h5 bag with a 'features' dataset)",
    )
    gen.add_argument("--n-per-class", type=int, required=True, help="synthetic patients per class")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--missing-class", help="a class the sheet lacks, learned from --external")
    gen.add_argument("--external", help="TSV sheet of an external cohort holding --missing-class patients")
    gen.add_argument("--classes", nargs="+", help="keep synthetic patients of these classes only (default: all)")
    gen.add_argument(
        "--n-components", type=int, nargs="+", default=[4, 6, 8, 10], help="GMM K, or a grid to choose from"
    )
    gen.add_argument("--n-pcs", type=int, default=16, help="principal components before the GMM (0: none)")
    gen.add_argument("--instance-source", default="class", choices=["class", "target", "pool", "external"])
    gen.add_argument("--missing-class-source", default="target", choices=["class", "target", "pool", "external"])
    _seed_and_device(gen, "GMM device: cpu, cuda or auto")

    tr = _command(
        sub,
        "train",
        _train,
        "train a final attention-MIL model on all patients",
        "Train the gated attention MIL on every real patient of SHEET (plus the synthetic patients of "
        "--synthetic): no patient is held out, every epoch runs and the last state is kept.",
        "TSV sheet of real patients: patient, label, path",
    )
    tr.add_argument("--synthetic", help="samples.tsv written by recipe-mil generate")
    tr.add_argument("--out", default=DEFAULT_MODEL, help=f"model file (default {DEFAULT_MODEL})")
    tr.add_argument("--classes", nargs="+", help="class order of the probabilities (default: sorted labels)")
    for name, kind, default in TRAIN_OPTIONS:
        tr.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=f"default {default}")
    _seed_and_device(tr, "cpu (deterministic), cuda or auto")

    pr = _command(
        sub,
        "predict",
        _predict,
        "predict new patients from their bags",
        "Class probabilities of new patients (columns patient, predicted, prob_<class>; label when "
        "the sheet has one) and the attention of every instance (patient, instance_id, attention).",
        "TSV sheet of new patients: patient, path (label optional)",
    )
    pr.add_argument("--model", default=DEFAULT_MODEL, help="model written by recipe-mil train")
    pr.add_argument("--out", default="predictions.tsv", help="predictions TSV")
    pr.add_argument("--attention", help="attention TSV (default: <out stem>_attention.tsv)")
    pr.add_argument("--device", default="cpu")

    sm = sub.add_parser(
        "summarize",
        help="one summary from the parts of a study",
        description="Combine the per-run tables (summary.tsv, recall.tsv, realism.tsv) of a study's finished "
        "parts (results/parts/<name>/ of runs with `--config part=<name>`) into the summary the whole study would "
        "have written: tables, paired comparisons with intervals, summary.md/.html and figures.",
    )
    sm.add_argument("parts", nargs="+", help="folders of finished parts")
    sm.add_argument("--out", required=True, help="output folder")
    sm.set_defaults(run=_summarize)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``recipe-mil``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        args.run(args)
    except (ValueError, OSError) as exc:  # bad sheets, bag files, classes: one line naming the problem
        print(f"recipe-mil {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
