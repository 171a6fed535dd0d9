"""Patient-level splits and scenario patient sets (docs/method.md §2)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from recipe_mil.methods import FAMILY_PATTERNS
from recipe_mil.seeds import derive_seed

SPLIT_COLUMNS = ["patient", "label", "cohort", "repeat", "fold", "role"]


def make_splits(
    sheet: pd.DataFrame,
    *,
    n_folds: int,
    n_repeats: int,
    val_fraction: float,
    seed: int,
) -> pd.DataFrame:
    """Repeated stratified K-fold with train/val/test roles, at patient level.

    Parameters
    ----------
    sheet
        Sample sheet with columns ``patient``, ``label`` and ``cohort``.
    n_folds
        Number of folds K; each target patient is in the test set of exactly one fold per repeat.
    n_repeats
        Number of repeats with different shuffles.
    val_fraction
        Fraction of each class's non-test patients held out for validation (at least one
        per class when the class has two or more non-test patients).
    seed
        Base seed.

    Returns
    -------
    pandas.DataFrame
        Columns ``patient, label, cohort, repeat, fold, role``. Target patients get role
        ``train``, ``val`` or ``test``; external-cohort patients get role ``external`` in
        every fold (never test, never validation).

    Raises
    ------
    ValueError
        If a class has fewer target patients than ``n_folds``.
    """
    target = sheet[sheet["cohort"] == "target"].reset_index(drop=True)
    external = sheet[sheet["cohort"] != "target"].reset_index(drop=True)
    counts = target["label"].value_counts()
    small = counts[counts < n_folds]
    if len(small):
        detail = ", ".join(f"{lab!r} has {n}" for lab, n in small.items())
        raise ValueError(f"each class needs at least n_folds={n_folds} target patients: {detail}")
    rows: list[pd.DataFrame] = []
    for rep in range(n_repeats):
        skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=derive_seed(seed, "splits", rep))
        for fold, (rest_idx, test_idx) in enumerate(skf.split(target["patient"], target["label"])):
            role = np.full(len(target), "train", dtype=object)
            role[test_idx] = "test"
            rng = np.random.default_rng(derive_seed(seed, "val", rep, fold))
            rest = target.iloc[rest_idx]
            for _, group in rest.groupby("label", sort=True):
                n_val = int(round(val_fraction * len(group)))
                if val_fraction > 0 and len(group) >= 2:
                    n_val = min(max(n_val, 1), len(group) - 1)
                else:
                    n_val = 0
                chosen = rng.choice(group.index.to_numpy(), size=n_val, replace=False)
                role[chosen] = "val"
            frame = target[["patient", "label", "cohort"]].copy()
            frame["repeat"], frame["fold"], frame["role"] = rep, fold, role
            rows.append(frame)
            if len(external):
                ext = external[["patient", "label", "cohort"]].copy()
                ext["repeat"], ext["fold"], ext["role"] = rep, fold, "external"
                rows.append(ext)
    return pd.concat(rows, ignore_index=True)[SPLIT_COLUMNS]


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario identifier.

    Attributes
    ----------
    name
        ``full``, ``low_data`` or ``missing_class``.
    n_per_class
        Real training patients per class (``low_data`` only).
    draw
        Index of the random draw of those patients (``low_data`` only).
    missing
        The class removed from the target training set (``missing_class`` only).
    """

    name: str
    n_per_class: int | None = None
    draw: int | None = None
    missing: str | None = None

    @property
    def id(self) -> str:
        """Identifier used in paths: ``full``, ``low_data-n{n}-d{draw}`` or ``missing_class-{class}``."""
        if self.name == "low_data":
            return f"low_data-n{self.n_per_class}-d{self.draw}"
        if self.name == "missing_class":
            return f"missing_class-{self.missing}"
        return self.name


SCENARIO_PATTERN = "|".join(FAMILY_PATTERNS.values())
_SCENARIO_RE = re.compile(r"^(full|low_data-n(\d+)-d(\d+)|missing_class-([A-Za-z0-9_.+-]+))$")


def parse_scenario(scenario_id: str) -> Scenario:
    """Parse a scenario identifier such as ``full`` or ``low_data-n4-d1``.

    Raises
    ------
    ValueError
        If the identifier is not recognised.
    """
    m = _SCENARIO_RE.match(scenario_id)
    if not m:
        raise ValueError(
            f"unknown scenario id {scenario_id!r} (expected 'full', 'low_data-n<N>-d<D>' or 'missing_class-<class>')"
        )
    if m.group(4) is not None:
        return Scenario(name="missing_class", missing=m.group(4))
    if m.group(2) is None:
        return Scenario(name=m.group(1))
    return Scenario(name="low_data", n_per_class=int(m.group(2)), draw=int(m.group(3)))


def scenario_patients(
    splits: pd.DataFrame,
    *,
    repeat: int,
    fold: int,
    scenario: str | Scenario,
    seed: int,
) -> pd.DataFrame:
    """Select the patients of one fold under one scenario, with their roles.

    Parameters
    ----------
    splits
        Output of :func:`make_splits`.
    repeat, fold
        Which split.
    scenario
        ``full`` keeps every training patient; ``low_data-n{n}-d{d}`` keeps ``n`` randomly
        drawn training patients per class (draw ``d``, seeded); ``missing_class-{c}``
        removes class ``c`` from the target training and validation patients (role
        ``unused``) and keeps only the external patients of class ``c`` (role
        ``external``; other external patients become ``unused``). Test patients are the
        same in every scenario, so results are comparable. Outside ``missing_class`` no
        external patient is used (role ``unused``).
    seed
        Base seed.

    Returns
    -------
    pandas.DataFrame
        Columns ``patient, label, cohort, role`` (roles train, val, test, external).

    Raises
    ------
    ValueError
        If a class has fewer training patients than the scenario asks for, or the external
        cohort has no patient of the missing class.
    """
    sc = parse_scenario(scenario) if isinstance(scenario, str) else scenario
    sel = splits[(splits["repeat"] == repeat) & (splits["fold"] == fold)]
    if sel.empty:
        raise ValueError(f"no split rows for repeat={repeat}, fold={fold}")
    out = sel[["patient", "label", "cohort", "role"]].reset_index(drop=True).copy()
    if sc.name != "missing_class":
        out.loc[out["role"] == "external", "role"] = "unused"
    if sc.name == "low_data":
        rng = np.random.default_rng(derive_seed(seed, "low_data", repeat, fold, sc.n_per_class, sc.draw))
        train = out[out["role"] == "train"]
        for label, group in train.groupby("label", sort=True):
            if len(group) < sc.n_per_class:
                raise ValueError(
                    f"scenario {sc.id}: class {label!r} has only {len(group)} training patients "
                    f"in repeat {repeat}, fold {fold}"
                )
            keep = rng.choice(group.index.to_numpy(), size=sc.n_per_class, replace=False)
            drop = group.index.difference(keep)
            out.loc[drop, "role"] = "unused"
    elif sc.name == "missing_class":
        is_c = out["label"] == sc.missing
        out.loc[is_c & out["role"].isin(["train", "val"]), "role"] = "unused"
        out.loc[~is_c & (out["role"] == "external"), "role"] = "unused"
        if not (is_c & (out["role"] == "external")).any():
            raise ValueError(f"scenario {sc.id}: the external cohort has no patient of class {sc.missing!r}")
    return out
