"""Monte-Carlo-dropout uncertainty of synthetic patients and selection policies (docs/method.md §4.6)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from recipe_mil.config import POLICIES, UNSEEN_CLASS_SCORERS, SelectConfig
from recipe_mil.device import resolve_device
from recipe_mil.mil.data import BagCollection, collate, features_on

__all__ = [
    "POLICIES",
    "UNSEEN_CLASS_SCORERS",
    "SelectConfig",
    "mc_dropout_probs",
    "select_bags",
    "uncertainty_scores",
]

EPS = 1e-12


@torch.no_grad()
def mc_dropout_probs(
    model: nn.Module, bags: BagCollection, *, passes: int, batch_size: int = 16, seed: int = 0, device: str = "cpu"
) -> np.ndarray:
    """Class probabilities of every bag under ``passes`` stochastic forward passes.

    Dropout layers stay active (``model.train()``; the gated-attention MIL has no batch
    norm); every instance of a bag is used. Batched: each batch of bags is gathered and
    its instances encoded once (the encoder's linear layer, the bulk of the work, has no
    dropout before it), then only the dropout, attention and classifier layers run
    ``passes`` times.

    Returns
    -------
    numpy.ndarray
        Shape (passes, n_bags, n_classes).
    """
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    device = str(resolve_device(device))
    model = model.to(device)
    model.train()
    source = features_on(bags.features, torch.device(device))
    out = np.zeros((passes, len(bags), 0), dtype=np.float32)
    chunks = []
    for start in range(0, len(bags), batch_size):
        ids = list(range(start, min(start + batch_size, len(bags))))
        x, mask, _, _ = collate(bags, ids, max_instances=None, rng=None, source=source)
        h = model.instance_features(x.to(device))  # deterministic: once per batch, not once per pass
        mask = mask.to(device)
        probs = [torch.softmax(model.pool_and_classify(h, mask)[0], dim=1) for _ in range(passes)]
        chunks.append(torch.stack(probs).cpu().numpy())
    model.eval()
    torch.random.set_rng_state(gen_state)
    return np.concatenate(chunks, axis=1) if chunks else out


def uncertainty_scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Uncertainty of each bag from Monte-Carlo class probabilities.

    Parameters
    ----------
    probs
        Shape (T, n_bags, C).
    labels
        Class index each synthetic bag was generated for.

    Returns
    -------
    dict
        ``entropy`` (predictive entropy of the mean), ``bald`` (mutual information: entropy
        minus the mean entropy of the passes), ``variation_ratio`` (1 - share of passes voting
        for the modal class), ``p_label`` (mean probability of the bag's own class) and
        ``predicted`` (argmax of the mean).
    """
    mean = probs.mean(axis=0)
    entropy = -(mean * np.log(mean + EPS)).sum(axis=1)
    expected = -(probs * np.log(probs + EPS)).sum(axis=2).mean(axis=0)
    votes = probs.argmax(axis=2)
    modal = np.array([np.bincount(v, minlength=probs.shape[2]).max() for v in votes.T])
    return {
        "entropy": entropy,
        "bald": np.maximum(entropy - expected, 0.0),
        "variation_ratio": 1.0 - modal / probs.shape[0],
        "p_label": mean[np.arange(len(labels)), labels],
        "predicted": mean.argmax(axis=1),
    }


def select_bags(
    scores: dict[str, np.ndarray], labels: np.ndarray, *, policy: str, n_per_class: int, classes: Sequence[int]
) -> np.ndarray:
    """Choose ``n_per_class`` synthetic bags per class.

    Parameters
    ----------
    scores
        Output of :func:`uncertainty_scores`.
    labels
        Class index of each synthetic bag.
    policy
        ``most_uncertain``: the highest BALD (active-learning style: bags the model has not
        learned yet). ``confident_consistent``: bags predicted as their own class, most
        confident first (highest ``p_label``); if fewer are consistent, the most confident of
        the rest fill up.
    n_per_class
        Bags kept per class (all of a class's bags if it has fewer).
    classes
        Class indices to select for.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the kept bags.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown selection policy {policy!r}; choose one of {POLICIES}")
    keep = np.zeros(len(labels), dtype=bool)
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if policy == "most_uncertain":
            order = idx[np.argsort(-scores["bald"][idx], kind="stable")]
        else:
            consistent = scores["predicted"][idx] == c
            conf = scores["p_label"][idx]
            order = idx[np.lexsort((-conf, ~consistent))]
        keep[order[:n_per_class]] = True
    return keep
