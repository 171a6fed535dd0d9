"""One training run: a method on one dataset / scenario / fold, evaluated on real test patients."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recipe_mil.evaluate import classification_metrics
from recipe_mil.io.atomic import atomic_path
from recipe_mil.io.bags import read_bags
from recipe_mil.mil import BagCollection, GatedAttentionMIL, TrainConfig, concat_collections, fit_mil, predict
from recipe_mil.recipes.generate import SyntheticSet
from recipe_mil.select import score_and_select

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What one run writes.

    Attributes
    ----------
    predictions
        One row per test patient: ``patient, label, predicted`` and ``prob_<class>`` columns.
    metrics
        Metrics on the test patients plus run metadata.
    attention
        Per-instance attention of the test patients: ``patient, instance_id, attention``.
    history
        Per-epoch training history.
    model
        The trained model (best validation state).
    """

    predictions: pd.DataFrame
    metrics: dict[str, object]
    attention: pd.DataFrame
    history: list[dict[str, float]]
    model: GatedAttentionMIL


def save_model(model: GatedAttentionMIL, path: str | os.PathLike[str]) -> None:
    """Save a MIL model's weights and architecture atomically.

    The same model gives the same bytes: serialised to memory first, because ``torch.save``
    names the archive's records after the file it writes (here a random temporary name).
    """
    arch = {k: getattr(model, k) for k in ("in_dim", "n_classes", "hidden", "attention_dim")}
    buffer = io.BytesIO()
    torch.save({"arch": arch, "dropout": model.dropout_p, "state_dict": model.state_dict()}, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_model(path: str | os.PathLike[str]) -> GatedAttentionMIL:
    """Load a model written by :func:`save_model` (on the CPU)."""
    doc = torch.load(path, map_location="cpu", weights_only=True)
    model = GatedAttentionMIL(**doc["arch"], dropout=doc["dropout"])
    model.load_state_dict(doc["state_dict"])
    return model.eval()


def real_collection(
    patients: pd.DataFrame, bag_paths: Mapping[str, str], classes: Sequence[str]
) -> tuple[BagCollection, list[np.ndarray]]:
    """Load the bags of ``patients`` into one collection; also return their instance ids."""
    features, offsets, bags = read_bags([bag_paths[p] for p in patients["patient"]])
    labels = np.array([classes.index(lab) for lab in patients["label"]], dtype=np.int64)
    coll = BagCollection.from_offsets(features, offsets, labels, list(patients["patient"]))
    return coll, [b.instance_ids for b in bags]


def synthetic_collection(syn: SyntheticSet, pool_features: np.ndarray, classes: Sequence[str]) -> BagCollection:
    """Synthetic bags as index sets into the pool's embeddings, or into their own features (ReMix prototypes).

    Soft targets (PseMix) are carried over; rows are gathered at batch time.
    """
    classes = list(classes)
    labels = np.array([classes.index(lab) for lab in syn.label], dtype=np.int64)
    names = [f"synthetic_{i}" for i in range(len(syn))]
    features = syn.features if syn.features is not None else pool_features
    return BagCollection(
        features=np.asarray(features, np.float32),
        bag_indices=syn.bags(),
        labels=labels,
        names=names,
        soft_targets=None if syn.soft_targets is None else np.asarray(syn.soft_targets, np.float32),
    )


def run_method(
    patients: pd.DataFrame,
    bag_paths: Mapping[str, str],
    classes: Sequence[str],
    config: TrainConfig,
    *,
    synthetic: BagCollection | None = None,
    train_roles: Sequence[str] = ("train",),
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Train the attention MIL on real (+ synthetic) training bags and test on real test patients.

    Parameters
    ----------
    patients
        The fold's patients with roles ``train``, ``val``, ``test`` (others are ignored).
    bag_paths
        Patient -> bag file.
    classes
        Class names; their order defines the class indices and probability columns.
    config
        MIL training settings (seed included).
    synthetic
        Synthetic training bags (already selected), or None for ``real_only``.
    train_roles
        Roles whose real patients are trained on (``("train", "external")`` adds the
        external patients of a missing class as they are).
    log
        Progress callback.

    Returns
    -------
    RunResult
        Predictions, metrics, attention and history.
    """
    classes = list(classes)
    by_role = {r: patients[patients["role"] == r].reset_index(drop=True) for r in ("val", "test")}
    by_role["train"] = patients[patients["role"].isin(train_roles)].reset_index(drop=True)
    train, _ = real_collection(by_role["train"], bag_paths, classes)
    val = real_collection(by_role["val"], bag_paths, classes)[0] if len(by_role["val"]) else None
    test, test_ids = real_collection(by_role["test"], bag_paths, classes)
    n_real = len(train)
    if synthetic is not None and len(synthetic):
        train = concat_collections(train, synthetic)
    if log:
        log(f"training on {n_real} real + {len(train) - n_real} synthetic bags; {0 if val is None else len(val)} val")
    fit = fit_mil(train, val, len(classes), config, log=log)
    probs, attention = predict(fit.model, test, device=config.device)
    y_true = test.labels
    metrics: dict[str, object] = classification_metrics(y_true, probs, len(classes))
    metrics.update(n_real_train=n_real, n_synthetic=len(train) - n_real, n_test=len(test), best_epoch=fit.best_epoch)
    pred = pd.DataFrame(
        {
            "patient": by_role["test"]["patient"],
            "label": by_role["test"]["label"],
            "predicted": [classes[i] for i in probs.argmax(axis=1)],
        }
    )
    for j, c in enumerate(classes):
        pred[f"prob_{c}"] = probs[:, j]
    att = pd.DataFrame(
        {
            "patient": np.repeat(by_role["test"]["patient"].to_numpy(), [len(a) for a in attention]),
            "instance_id": np.concatenate(test_ids),
            "attention": np.concatenate(attention),
        }
    )
    return RunResult(predictions=pred, metrics=metrics, attention=att, history=fit.history, model=fit.model)


def run_fold(
    patients: pd.DataFrame,
    bag_paths: Mapping[str, str],
    classes: Sequence[str],
    methods: Sequence[str],
    config: Callable[[str], TrainConfig],
    *,
    synthetic: Mapping[str, SyntheticSet],
    pool_features: np.ndarray | None,
    select: Mapping[str, object] | None = None,
    n_per_class: int = 0,
    select_seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, RunResult], SyntheticSet | None]:
    """Train every method of one fold, ``real_only`` first (its model scores the recipe candidates).

    Parameters
    ----------
    patients, bag_paths, classes
        As for :func:`run_method`.
    methods
        Methods to run (see :data:`recipe_mil.augment.METHODS`).
    config
        Method -> its training settings (each method gets its own seed).
    synthetic
        Generator -> synthetic patients (``recipe_candidates`` for ``recipe_selected``).
    pool_features
        The pool's embeddings (index-based synthetic bags point into them).
    select
        ``passes`` and ``policy`` of the uncertainty selection.
    n_per_class
        Candidates kept per class by the selection.
    select_seed
        Seed of the Monte-Carlo dropout passes.
    log
        Progress callback.

    Returns
    -------
    results
        Method -> its run result.
    scored
        The recipe candidates with their uncertainty scores and selection mask (None
        without ``recipe_selected``).
    """
    say = log or (lambda _msg: None)
    order = sorted(methods, key=lambda m: m != "real_only")
    if "recipe_selected" in order and "real_only" not in order:
        order.insert(0, "real_only")
    results: dict[str, RunResult] = {}
    scored = None
    for method in order:
        say(f"=== {method}")
        syn_bags = None
        if method == "recipe_selected":
            scored = synthetic["recipe_candidates"]
            cand = synthetic_collection(scored, pool_features, classes)
            scores, keep = score_and_select(
                results["real_only"].model,
                cand,
                passes=int(select["passes"]),
                policy=str(select["policy"]),
                n_per_class=n_per_class,
                seed=select_seed,
            )
            scored.scores = scores
            scored.selected = keep
            say(f"selected {int(keep.sum())} of {len(keep)} candidates ({select['policy']})")
            syn_bags = synthetic_collection(scored.subset(keep), pool_features, classes)
        elif method in synthetic:
            syn_bags = synthetic_collection(synthetic[method], pool_features, classes)
        roles = ("train", "external") if method == "real_external" else ("train",)
        results[method] = run_method(
            patients, bag_paths, classes, config(method), synthetic=syn_bags, train_roles=roles, log=log
        )
    return {m: results[m] for m in methods}, scored
