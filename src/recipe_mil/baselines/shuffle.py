"""Shuffle baseline: new bags of random instances of one class's patients."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from recipe_mil.baselines.common import PoolBags
from recipe_mil.recipes.generate import SyntheticSet


def shuffle_bags(obs: pd.DataFrame, classes: Sequence[str], *, n_per_class: int, seed: int) -> SyntheticSet:
    """Bags of instances drawn at random from all pooled instances of one class.

    Bag sizes are drawn from the class's real bag sizes; instances without replacement. The arguments are those
    every baseline takes (:mod:`recipe_mil.baselines`); the result's bags index the pool.
    """
    rng = np.random.default_rng(seed)
    pb = PoolBags.from_obs(obs)
    labels = obs["label"].astype(str).to_numpy()
    bags, out = [], []
    for cls in classes:
        members = np.flatnonzero(labels == cls)
        sizes = [len(pb.rows[i]) for i in pb.of_class(cls)]
        if not len(members):
            continue
        for size in rng.choice(sizes, size=n_per_class):
            bags.append(rng.choice(members, size=min(size, len(members)), replace=False))
            out.append(cls)
    return SyntheticSet.from_bags(bags, out)
