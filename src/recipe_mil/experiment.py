"""One fold of the study: every method trained from the same seed, evaluated on real test patients.

See ``docs/method.md`` (study design) for the choices made here: common random numbers across
methods, validation for a class without real validation patients, and the selection of
synthetic patients of a class the reference model never saw.
"""

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
from recipe_mil.io.store import bag_features, fits_in_memory
from recipe_mil.methods import METHODS, REFERENCE
from recipe_mil.mil import (
    BagCollection,
    FitResult,
    GatedAttentionMIL,
    TrainConfig,
    concat_collections,
    fit_mil,
    predict,
)
from recipe_mil.mil.data import RowStore
from recipe_mil.recipes.generate import SyntheticSet
from recipe_mil.seeds import derive_seed
from recipe_mil.select import SelectConfig, mc_dropout_probs, select_bags, uncertainty_scores

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


def save_model(
    model: GatedAttentionMIL, path: str | os.PathLike[str], *, meta: Mapping[str, object] | None = None
) -> None:
    """Save a MIL model's weights and architecture atomically.

    The same model gives the same bytes: serialised to memory first, because ``torch.save``
    names the archive's records after the file it writes (here a random temporary name).
    ``meta`` (plain values: strings, numbers, lists, dicts) is stored beside the weights, e.g.
    the class names of the probability columns; :func:`model_meta` reads it back.
    """
    arch = {k: getattr(model, k) for k in ("in_dim", "n_classes", "hidden", "attention_dim")}
    doc: dict[str, object] = {"arch": arch, "dropout": model.dropout_p, "state_dict": model.state_dict()}
    if meta is not None:
        doc["meta"] = dict(meta)
    buffer = io.BytesIO()
    torch.save(doc, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_model(path: str | os.PathLike[str]) -> GatedAttentionMIL:
    """Load a model written by :func:`save_model` (on the CPU)."""
    doc = torch.load(path, map_location="cpu", weights_only=True)
    model = GatedAttentionMIL(**doc["arch"], dropout=doc["dropout"])
    model.load_state_dict(doc["state_dict"])
    return model.eval()


def model_meta(path: str | os.PathLike[str]) -> dict[str, object]:
    """Return the ``meta`` a model file was saved with (empty if none)."""
    return dict(torch.load(path, map_location="cpu", weights_only=True).get("meta", {}))


def real_collection(
    patients: pd.DataFrame, bag_paths: Mapping[str, str], classes: Sequence[str], *, in_memory: bool | None = None
) -> tuple[BagCollection, list[np.ndarray]]:
    """Return the bags of ``patients`` as one collection, and their instance ids.

    The features are in memory, or a :class:`~recipe_mil.io.store.BagStore` over the bag files
    (:func:`~recipe_mil.io.store.bag_features`).
    """
    features, offsets, bags = bag_features([bag_paths[p] for p in patients["patient"]], in_memory=in_memory)
    labels = np.array([classes.index(lab) for lab in patients["label"]], dtype=np.int64)
    coll = BagCollection.from_offsets(features, offsets, labels, list(patients["patient"]))
    return coll, [b.instance_ids for b in bags]


def synthetic_collection(
    syn: SyntheticSet, pool_features: np.ndarray | RowStore | None, classes: Sequence[str]
) -> BagCollection:
    """Synthetic bags as index sets into the pool's embeddings, or into their own features (ReMix prototypes).

    Soft targets (PseMix) are carried over; rows are gathered at batch time (from a pool
    :class:`~recipe_mil.mil.data.RowStore`, read from the bag files then).
    """
    classes = list(classes)
    labels = np.array([classes.index(lab) for lab in syn.label], dtype=np.int64)
    names = [f"synthetic_{i}" for i in range(len(syn))]
    features = syn.features if syn.features is not None else pool_features
    if features is None:
        raise ValueError("index-based synthetic bags need the pool's features")
    return BagCollection(
        features=features,
        bag_indices=syn.bags(),
        labels=labels,
        names=names,
        soft_targets=None if syn.soft_targets is None else np.asarray(syn.soft_targets, np.float32),
    )


def hold_out_unseen(
    train: BagCollection, val: BagCollection | None, *, fraction: float, rng: np.random.Generator
) -> tuple[BagCollection, BagCollection | None]:
    """Move a share of the training bags of classes without a validation patient into validation.

    In ``missing_class`` the real validation patients lack the added class, so early stopping
    on them rewards a model that never predicts it. For every class with training bags but no
    validation bag, ``round(fraction * n)`` of its training bags (at least one when it has two
    or more) are held out for validation and never trained on. Those bags are synthetic
    (or, for ``real_external``, external patients): the only examples of the class there are.

    Parameters
    ----------
    train, val
        Training bags (real and synthetic) and real validation bags.
    fraction
        Share held out; 0 keeps everything as it is.
    rng
        Random generator.

    Returns
    -------
    train, val
        The reduced training bags and the extended validation bags.
    """
    if val is None or fraction <= 0:
        return train, val
    unseen = sorted(set(train.labels.tolist()) - set(val.labels.tolist()))
    moved: list[int] = []
    for c in unseen:
        idx = np.flatnonzero(train.labels == c)
        n = min(max(int(round(fraction * len(idx))), 1), len(idx) - 1) if len(idx) >= 2 else 0
        moved += sorted(rng.choice(idx, size=n, replace=False).tolist())
    if not moved:
        return train, val
    keep = np.setdiff1d(np.arange(len(train)), moved)
    return train.subset(keep), concat_collections(val, train.subset(moved))


@dataclass
class FoldData:
    """The real bags of one fold, read once and shared by every method and seed.

    Attributes
    ----------
    classes
        Class names (the order of the class indices).
    train
        Real training bags (role ``train``).
    external
        Real external bags (role ``external``: the external patients of a missing class).
    val
        Real validation bags, or None.
    test
        Real test bags.
    test_patients
        The test patients' rows (``patient``, ``label``).
    test_ids
        The test bags' instance ids.
    """

    classes: list[str]
    train: BagCollection
    external: BagCollection | None
    val: BagCollection | None
    test: BagCollection
    test_patients: pd.DataFrame
    test_ids: list[np.ndarray]

    @classmethod
    def load(
        cls,
        patients: pd.DataFrame,
        bag_paths: Mapping[str, str],
        classes: Sequence[str],
        *,
        in_memory: bool | None = None,
    ) -> FoldData:
        """Read the fold's bags by role (``unused`` patients are not read).

        ``in_memory``: True reads every bag into memory, False leaves the features in the bag
        files (a :class:`~recipe_mil.io.store.BagStore` per role, read a batch at a time: bounded
        memory), None (default) reads into memory unless the fold's bags together exceed
        :data:`~recipe_mil.io.bags.IN_MEMORY_LIMIT_BYTES`. Training and prediction give the same
        numbers either way.
        """
        classes = list(classes)
        by_role = {
            r: patients[patients["role"] == r].reset_index(drop=True) for r in ("train", "external", "val", "test")
        }
        if in_memory is None:
            in_memory = fits_in_memory([bag_paths[p] for frame in by_role.values() for p in frame["patient"]])

        def load(role: str) -> BagCollection:
            return real_collection(by_role[role], bag_paths, classes, in_memory=in_memory)[0]

        test, test_ids = real_collection(by_role["test"], bag_paths, classes, in_memory=in_memory)
        return cls(
            classes=classes,
            train=load("train"),
            external=load("external") if len(by_role["external"]) else None,
            val=load("val") if len(by_role["val"]) else None,
            test=test,
            test_patients=by_role["test"],
            test_ids=test_ids,
        )

    def real_training(self, roles: Sequence[str]) -> BagCollection:
        """Return the real training bags of ``roles`` (``train``, plus ``external`` for ``real_external``)."""
        if "external" in roles and self.external is not None:
            return concat_collections(self.train, self.external)
        return self.train


@dataclass
class Trained:
    """A model trained by :func:`fit_on`, with what it was trained on.

    Attributes
    ----------
    fit
        The model, its history and the epoch of the kept state.
    n_real, n_synthetic
        Real and synthetic bags trained on (after the validation hold-out).
    """

    fit: FitResult
    n_real: int
    n_synthetic: int


def fit_on(
    data: FoldData,
    config: TrainConfig,
    *,
    synthetic: BagCollection | None = None,
    roles: Sequence[str] = ("train",),
    unseen_val_fraction: float = 0.25,
    log: Callable[[str], None] | None = None,
) -> Trained:
    """Train the attention MIL on the fold's real (+ synthetic) training bags.

    Validation: the fold's real validation bags, plus the bags :func:`hold_out_unseen`
    moves there for a class without real validation patients.
    """
    real = data.real_training(roles)
    train = concat_collections(real, synthetic) if synthetic is not None and len(synthetic) else real
    is_real = np.r_[np.ones(len(real), bool), np.zeros(len(train) - len(real), bool)]
    train.names = [f"{'r' if r else 's'}:{n}" for r, n in zip(is_real, train.names, strict=True)]
    rng = np.random.default_rng(derive_seed(config.seed, "unseen_val"))
    train, val = hold_out_unseen(train, data.val, fraction=unseen_val_fraction, rng=rng)
    n_real = sum(n.startswith("r:") for n in train.names)
    if log:
        log(
            f"training on {n_real} real + {len(train) - n_real} synthetic bags; "
            f"{0 if val is None else len(val)} validation bags"
        )
    return Trained(fit_mil(train, val, len(data.classes), config, log=log), n_real, len(train) - n_real)


def evaluate_on_test(
    model: GatedAttentionMIL, data: FoldData, *, device: str
) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Predictions, metrics (with per-class recall) and attention on the fold's real test patients."""
    pred, att, probs = prediction_tables(
        model, data.test, data.test_patients, data.test_ids, data.classes, device=device
    )
    metrics: dict[str, object] = classification_metrics(data.test.labels, probs, len(data.classes))
    pred_idx = probs.argmax(axis=1)
    metrics["recall"] = {
        c: float((pred_idx[data.test.labels == j] == j).mean())
        for j, c in enumerate(data.classes)
        if (data.test.labels == j).any()
    }
    return pred, metrics, att


def prediction_tables(
    model: GatedAttentionMIL,
    bags: BagCollection,
    patients: pd.DataFrame,
    instance_ids: Sequence[np.ndarray],
    classes: Sequence[str],
    *,
    device: str,
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Score bags with every instance: the predictions table, the attention table and the probabilities.

    Parameters
    ----------
    model
        A trained model.
    bags
        The patients' bags, in ``patients`` order.
    patients
        Column ``patient`` and, when known, ``label`` (copied to the predictions).
    instance_ids
        Per bag, its instance ids.
    classes
        Class names, in the model's output order.
    device
        Device name.

    Returns
    -------
    predictions
        One row per patient: ``patient``, [``label``], ``predicted`` and ``prob_<class>`` per class.
    attention
        One row per instance: ``patient, instance_id, attention`` (a bag's attention sums to 1).
    probs
        Float32 array (n_bags, n_classes).
    """
    probs, attention = predict(model, bags, device=device)
    keep = [c for c in ("patient", "label") if c in patients]
    pred = patients[keep].reset_index(drop=True)
    pred["predicted"] = [classes[i] for i in probs.argmax(axis=1)]
    for j, c in enumerate(classes):
        pred[f"prob_{c}"] = probs[:, j]
    att = pd.DataFrame(
        {
            "patient": np.repeat(patients["patient"].to_numpy(), [len(a) for a in attention]),
            "instance_id": np.concatenate(instance_ids) if len(instance_ids) else np.array([], dtype=object),
            "attention": np.concatenate(attention) if attention else np.array([], dtype=np.float32),
        }
    )
    return pred, att, probs


def cross_fit_scores(
    data: FoldData,
    candidates: BagCollection,
    config: TrainConfig,
    select: SelectConfig,
    *,
    seed: int,
    unseen_val_fraction: float,
    log: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Out-of-fold MC-dropout scores of every candidate, from models trained on real + candidates.

    The candidates are split in two halves (stratified by class, seeded); a model trained on
    the real training bags plus one half scores the other half, and the other way round. So
    every candidate is scored by a model that has seen its class (through the other half's
    candidates) but not the candidate itself.

    Returns
    -------
    dict
        As :func:`recipe_mil.select.uncertainty_scores`, in candidate order.
    """
    rng = np.random.default_rng(seed)
    halves: list[list[int]] = [[], []]
    for c in np.unique(candidates.labels):
        idx = rng.permutation(np.flatnonzero(candidates.labels == c))
        halves[0] += idx[: len(idx) // 2].tolist()
        halves[1] += idx[len(idx) // 2 :].tolist()
    probs = np.zeros((select.passes, len(candidates), len(data.classes)), dtype=np.float32)
    for h in (0, 1):
        if log:
            log(f"cross-fit scorer {h + 1}/2: trained with {len(halves[1 - h])} candidates, scores {len(halves[h])}")
        trained = fit_on(
            data, config, synthetic=candidates.subset(halves[1 - h]), unseen_val_fraction=unseen_val_fraction, log=log
        )
        probs[:, halves[h]] = mc_dropout_probs(
            trained.fit.model, candidates.subset(halves[h]), passes=select.passes, seed=seed + h, device=config.device
        )
    return uncertainty_scores(probs, candidates.labels)


def select_candidates(
    data: FoldData,
    reference: GatedAttentionMIL,
    candidates: SyntheticSet,
    pool_features: np.ndarray | RowStore | None,
    config: TrainConfig,
    select: SelectConfig,
    *,
    n_per_class: int,
    seed: int,
    unseen_val_fraction: float,
    log: Callable[[str], None] | None = None,
) -> SyntheticSet:
    """Score the recipe candidates by Monte-Carlo dropout and keep ``n_per_class`` per class.

    Classes with real training patients are scored by the ``real_only`` model of the same
    seed. A class it never saw (the missing class) gets, with ``select.unseen_class =
    cross_fit``, the out-of-fold scores of :func:`cross_fit_scores`: the reference model puts
    a probability near 0 on every candidate of a class it cannot predict, so its uncertainty
    there says nothing about the candidates. ``reference`` keeps the reference model's
    scores for every class (the first version's behaviour).

    Returns
    -------
    SyntheticSet
        The candidates with ``scores`` (``scorer``: 0 reference model, 1 cross-fit) and the
        ``selected`` mask.
    """
    cand = synthetic_collection(candidates, pool_features, data.classes)
    probs = mc_dropout_probs(reference, cand, passes=select.passes, seed=seed, device=config.device)
    scores = uncertainty_scores(probs, cand.labels)
    scorer = np.zeros(len(cand), dtype=np.int64)
    unseen = sorted(set(cand.labels.tolist()) - set(data.train.labels.tolist()))
    if unseen and select.unseen_class == "cross_fit":
        cf = cross_fit_scores(data, cand, config, select, seed=seed, unseen_val_fraction=unseen_val_fraction, log=log)
        rows = np.isin(cand.labels, unseen)
        for k in scores:
            scores[k] = np.where(rows, cf[k], scores[k])
        scorer[rows] = 1
    keep = select_bags(
        scores, cand.labels, policy=select.policy, n_per_class=n_per_class, classes=np.unique(cand.labels)
    )
    if log:
        log(f"selected {int(keep.sum())} of {len(keep)} candidates ({select.policy}; unseen classes {unseen})")
    candidates.scores = {**scores, "scorer": scorer}
    candidates.selected = keep
    return candidates


def run_fold(
    data: FoldData,
    methods: Sequence[str],
    config: TrainConfig,
    *,
    synthetic: Mapping[str, SyntheticSet],
    pool_features: np.ndarray | RowStore | None,
    select: SelectConfig | None = None,
    n_per_class: int = 0,
    select_seed: int = 0,
    unseen_val_fraction: float = 0.25,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, RunResult], SyntheticSet | None]:
    """Train every method of one fold from the same seed (``real_only`` first: it scores the candidates).

    Common random numbers: every method starts from the same initial weights and random
    stream (``config.seed``), so a paired difference between two methods of one fold and
    seed measures the data they were given, not a lucky initialisation.

    Parameters
    ----------
    data
        The fold's real bags.
    methods
        Methods to run (names in :data:`recipe_mil.methods.METHODS`).
    config
        MIL training settings, seed included (the same for every method).
    synthetic
        Generator -> synthetic patients (``recipe_candidates`` for ``recipe_selected``).
    pool_features
        The pool's embeddings (index-based synthetic bags point into them), in memory or a
        :class:`~recipe_mil.mil.data.RowStore` (:func:`recipe_mil.recipes.pool.pool_rows`).
    select
        Selection settings for ``recipe_selected``.
    n_per_class
        Candidates kept per class by the selection.
    select_seed
        Seed of the Monte-Carlo dropout passes and the cross-fit split.
    unseen_val_fraction
        Share of a class's training bags held out for validation when the class has no
        real validation patient (:func:`hold_out_unseen`).
    log
        Progress callback.

    Returns
    -------
    results
        Method -> its run result.
    scored
        The recipe candidates with their scores and selection mask (None without
        ``recipe_selected``).
    """
    say = log or (lambda _msg: None)
    order = sorted(methods, key=lambda m: m != REFERENCE)
    if "recipe_selected" in order and REFERENCE not in order:
        order.insert(0, REFERENCE)
    results: dict[str, RunResult] = {}
    scored = None
    for method in order:
        say(f"=== {method}")
        spec = METHODS[method]
        syn_bags = None
        if spec.selected:
            scored = select_candidates(
                data,
                results[REFERENCE].model,
                synthetic[spec.generator],
                pool_features,
                config,
                select or SelectConfig(),
                n_per_class=n_per_class,
                seed=select_seed,
                unseen_val_fraction=unseen_val_fraction,
                log=log,
            )
            syn_bags = synthetic_collection(scored.subset(scored.selected), pool_features, data.classes)
        elif spec.generator is not None:
            syn_bags = synthetic_collection(synthetic[spec.generator], pool_features, data.classes)
        trained = fit_on(
            data, config, synthetic=syn_bags, roles=spec.real_roles, unseen_val_fraction=unseen_val_fraction, log=log
        )
        pred, metrics, att = evaluate_on_test(trained.fit.model, data, device=config.device)
        metrics.update(
            n_real_train=trained.n_real,
            n_synthetic=trained.n_synthetic,
            n_test=len(data.test),
            best_epoch=trained.fit.best_epoch,
        )
        results[method] = RunResult(
            predictions=pred, metrics=metrics, attention=att, history=trained.fit.history, model=trained.fit.model
        )
    return {m: results[m] for m in methods}, scored
