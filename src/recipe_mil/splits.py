"""Patient-level splits and scenario patient sets (docs/method.md §2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from recipe_mil.scenarios import SCENARIOS, Scenario, parse_scenario
from recipe_mil.seeds import derive_seed

__all__ = ["SPLIT_COLUMNS", "Scenario", "make_splits", "parse_scenario", "scenario_patients"]

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
        A registered scenario (:data:`recipe_mil.scenarios.SCENARIOS`; its family's ``patients``
        sets the roles). ``full`` keeps every training patient; ``low_data-n{n}-d{d}`` keeps ``n`` randomly
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
    family = SCENARIOS[sc.name]
    sel = splits[(splits["repeat"] == repeat) & (splits["fold"] == fold)]
    if sel.empty:
        raise ValueError(f"no split rows for repeat={repeat}, fold={fold}")
    out = sel[["patient", "label", "cohort", "role"]].reset_index(drop=True).copy()
    if not family.uses_external:
        out.loc[out["role"] == "external", "role"] = "unused"
    return out if family.patients is None else family.patients(out, sc, repeat, fold, seed)
