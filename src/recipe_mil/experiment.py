"""One training run: a method on one dataset / scenario / fold, evaluated on real test patients."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recipe_mil.evaluate import classification_metrics
from recipe_mil.io.bags import read_bags
from recipe_mil.mil import BagCollection, TrainConfig, concat_collections, fit_mil, predict
from recipe_mil.recipes.generate import SyntheticSet

logger = logging.getLogger(__name__)

METHODS = ("real_only", "recipe")


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
    """

    predictions: pd.DataFrame
    metrics: dict[str, object]
    attention: pd.DataFrame
    history: list[dict[str, float]]


def real_collection(
    patients: pd.DataFrame, bag_paths: Mapping[str, str], classes: Sequence[str]
) -> tuple[BagCollection, list[np.ndarray]]:
    """Load the bags of ``patients`` into one collection; also return their instance ids."""
    features, offsets, bags = read_bags([bag_paths[p] for p in patients["patient"]])
    labels = np.array([classes.index(lab) for lab in patients["label"]], dtype=np.int64)
    coll = BagCollection.from_offsets(features, offsets, labels, list(patients["patient"]))
    return coll, [b.instance_ids for b in bags]


def synthetic_collection(syn: SyntheticSet, pool_features: np.ndarray, classes: Sequence[str]) -> BagCollection:
    """Synthetic bags as index sets into the pool's embeddings (gathered at batch time)."""
    labels = np.array([classes.index(lab) for lab in syn.label], dtype=np.int64)
    names = [f"synthetic_{i}" for i in range(len(syn))]
    return BagCollection(
        features=np.asarray(pool_features, np.float32), bag_indices=syn.bags(), labels=labels, names=names
    )


def run_method(
    patients: pd.DataFrame,
    bag_paths: Mapping[str, str],
    classes: Sequence[str],
    config: TrainConfig,
    *,
    synthetic: BagCollection | None = None,
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
    log
        Progress callback.

    Returns
    -------
    RunResult
        Predictions, metrics, attention and history.
    """
    classes = list(classes)
    by_role = {r: patients[patients["role"] == r].reset_index(drop=True) for r in ("train", "val", "test")}
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
    return RunResult(predictions=pred, metrics=metrics, attention=att, history=fit.history)
