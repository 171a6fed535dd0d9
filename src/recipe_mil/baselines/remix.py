"""ReMix baseline (after Yang et al. 2022): prototype bags augmented with a same-class bag.

Each bag is reduced to k-means prototypes (with per-cluster covariances). A synthetic bag
starts from the prototypes of a bag A and applies one augmentation with a random bag B of
the same class: ``replace`` (each prototype swapped, with probability ``p``, for its nearest
prototype in B), ``append`` (B's nearest prototypes appended with probability ``p``),
``interpolate`` (prototypes moved towards their nearest B prototype by a uniform fraction
of at most 0.5) or ``covary`` (Gaussian noise following the covariance of the nearest B
cluster). The bag label is A's label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from recipe_mil.baselines.common import PoolBags, bag_prototypes
from recipe_mil.recipes.generate import SyntheticSet

REMIX_MODES = ("replace", "append", "interpolate", "covary")


def _reduce(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    centres, assign = bag_prototypes(x, k, seed=seed)
    covs = []
    for c in range(len(centres)):
        members = x[assign == c]
        cov = np.cov(members, rowvar=False) if len(members) > 1 else np.zeros((x.shape[1], x.shape[1]))
        covs.append(np.atleast_2d(cov))
    return centres, covs


def remix_bags(
    x: np.ndarray,
    obs: pd.DataFrame,
    classes: Sequence[str],
    *,
    n_per_class: int,
    n_prototypes: int = 8,
    modes: Sequence[str] = REMIX_MODES,
    p: float = 0.5,
    seed: int,
) -> SyntheticSet:
    """ReMix-augmented prototype bags (the arguments every baseline takes: :mod:`recipe_mil.baselines`).

    Parameters
    ----------
    n_prototypes
        k of the per-bag k-means.
    modes
        Augmentations to draw from.
    p
        Probability of augmenting each prototype (replace, append, interpolate).

    Returns
    -------
    SyntheticSet
        Bags whose ``indices`` index its own ``features`` (the synthetic prototypes).
    """
    bad = set(modes) - set(REMIX_MODES)
    if bad:
        raise ValueError(f"unknown ReMix mode(s) {sorted(bad)}; choose from {REMIX_MODES}")
    rng = np.random.default_rng(seed)
    pb = PoolBags.from_obs(obs)
    reduced = [_reduce(x[rows], n_prototypes, seed + i) for i, rows in enumerate(pb.rows)]
    feats, labels = [], []
    for cls in classes:
        own = pb.of_class(cls)
        if not own:
            continue
        for _ in range(n_per_class):
            a, b = int(rng.choice(own)), int(rng.choice(own))
            (ca, _), (cb, cov_b) = reduced[a], reduced[b]
            nearest = np.argmin(((ca[:, None, :] - cb[None, :, :]) ** 2).sum(-1), axis=1)
            mode = str(rng.choice(list(modes)))
            hit = rng.random(len(ca)) < p
            if mode == "replace":
                bag = np.where(hit[:, None], cb[nearest], ca)
            elif mode == "append":
                bag = np.concatenate([ca, cb[nearest[hit]]])
            elif mode == "interpolate":
                lam = rng.uniform(0, 0.5, size=(len(ca), 1)) * hit[:, None]
                bag = ca + lam * (cb[nearest] - ca)
            else:
                noise = np.stack([rng.multivariate_normal(np.zeros(ca.shape[1]), cov_b[j]) for j in nearest])
                bag = ca + noise
            feats.append(bag.astype(np.float32))
            labels.append(cls)
    lengths = [len(f) for f in feats]
    return SyntheticSet.from_bags(
        [np.arange(s, s + n) for s, n in zip(np.cumsum([0, *lengths[:-1]]), lengths, strict=True)],
        labels,
        features=np.concatenate(feats) if feats else np.empty((0, x.shape[1]), np.float32),
    )
