"""Pieces every simulator shares: parameters, patient ids, the cohort design, bag sizes and cell states.

A simulator's parameters subclass :class:`SimParams`.

Every simulator draws a patient the same way (:func:`draw_instances`): its instances spread over
the cell types by proportions drawn from ``Dirichlet(concentration * m_c)`` (``m_c`` the class
mean, see :class:`CellStates`), and each instance gets a *state*:

``baseline``
    the cell type as it is in healthy patients;
``shifted``
    a sub-state of a cell type shared by all classes, which a disease moves part of that type
    to (dysplastic neutrophils, activated T cells): the same cluster then holds healthy-like
    and disease-like cells. Per class and cell type, each instance is shifted with a fixed
    probability (``state_shift``), and the shift's size is the simulator's
    ``state_shift_magnitude``;
``disease_only``
    a cell type that exists only in one class (blasts, an aberrant phenotype): the class's
    mean proportions put ``disease_only[class]`` of the mass on it, the other classes none.

The patient-level effects (a per-patient offset of expression, fluorescence or stain) and the
modality-specific meaning of a shift are the simulators' own; the bag size of every simulator is
:func:`draw_bag_size`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import pandas as pd

from recipe_mil.config import check_values

STATES: tuple[str, ...] = ("baseline", "shifted", "disease_only")
"""Instance states, in the order of the state codes of :func:`draw_instances`."""


class CohortParams(Protocol):
    """What :func:`cohort_design` needs of a simulator's parameters."""

    classes: tuple[str, ...]
    n_patients_per_class: int
    patient_prefix: str
    cohort: str


def patient_ids(params: CohortParams) -> list[str]:
    """Patient ids ``{prefix}{index}``, zero-padded to at least three digits, grouped by class."""
    n = len(params.classes) * params.n_patients_per_class
    width = max(3, len(str(n - 1)))
    return [f"{params.patient_prefix}{i:0{width}d}" for i in range(n)]


def cohort_design(params: CohortParams) -> pd.DataFrame:
    """List a simulated cohort's patients without simulating any data.

    Parameters
    ----------
    params
        A simulator's parameters.

    Returns
    -------
    pandas.DataFrame
        Columns ``patient``, ``label``, ``cohort``, one row per patient in the simulator's
        order (grouped by class, in the order of ``params.classes``).
    """
    labels = [c for c in params.classes for _ in range(params.n_patients_per_class)]
    return pd.DataFrame({"patient": patient_ids(params), "label": labels, "cohort": params.cohort})


def draw_bag_size(rng: np.random.Generator, mean: float, sd: float, low: int, high: int | None = None) -> int:
    """Draw one patient's bag size: ``round(Normal(mean, sd))`` clipped to ``[low, high]``.

    The bag size is a patient-level effect: patients of one class differ in how many cells,
    events or crops they have, with sd ``sd`` before clipping.

    Parameters
    ----------
    rng
        The patient's random generator (one normal draw is consumed).
    mean, sd
        Mean and sd of the bag size.
    low, high
        Clipping bounds (``high`` None: no upper bound).

    Returns
    -------
    int
        The bag size.
    """
    n = int(round(rng.normal(mean, sd)))
    return int(max(low, n if high is None else min(n, high)))


def check_params(params: Any, checks: Mapping[str, bool]) -> None:
    """Check a simulator's parameters: normalise ``params.classes`` and raise naming every failed check.

    Parameters
    ----------
    params
        A simulator's parameter dataclass (named in messages); its ``classes`` become a tuple of strings.
    checks
        Field name -> whether its value is valid.

    Raises
    ------
    ValueError
        If ``classes`` is empty or repeats a name, or naming every field whose check failed (with its value).
    """
    owner = type(params).__name__
    params.classes = tuple(str(c) for c in params.classes)
    if not params.classes:
        raise ValueError(f"{owner}: classes must not be empty")
    if len(set(params.classes)) != len(params.classes):
        raise ValueError(f"{owner}: duplicate class names in {params.classes}")
    check_values(params, checks)


def _per_class(
    owner: str, key: str, classes: Sequence[str], given: Mapping[str, object] | None, builtin: Mapping[str, object]
) -> dict[str, object]:
    """Return a per-class parameter as configured (None: ``builtin`` of ``classes``), its classes checked."""
    raw = {c: v for c, v in builtin.items() if c in classes} if given is None else dict(given)
    unknown = sorted(set(raw) - set(classes))
    if unknown:
        raise ValueError(f"{owner}: {key} names class(es) {unknown} that are not among {list(classes)}")
    return raw


def resolve_disease_only(
    owner: str,
    classes: Sequence[str],
    given: Mapping[str, float] | None,
    builtin: Mapping[str, float],
) -> dict[str, float]:
    """Check and complete a ``disease_only`` parameter (class -> mean fraction of its instances).

    Parameters
    ----------
    owner
        The parameter class's name, for error messages.
    classes
        The cohort's classes.
    given
        The parameter as configured; None: ``builtin`` restricted to ``classes``; ``{}``: none.
    builtin
        The simulator's built-in defaults (keyed by known class names).

    Returns
    -------
    dict[str, float]
        Class -> fraction in (0, 1), classes in ``classes`` only, in the order of ``classes``.

    Raises
    ------
    ValueError
        If a class is unknown or a fraction is not in (0, 1).
    """
    raw = _per_class(owner, "disease_only", classes, given, builtin)
    bad = {c: f for c, f in raw.items() if not 0.0 < float(f) < 1.0}  # type: ignore[arg-type]
    if bad:
        raise ValueError(f"{owner}: disease_only fractions must be in (0, 1), got {bad}")
    return {c: float(raw[c]) for c in classes if c in raw}  # type: ignore[arg-type]


def resolve_state_shift(
    owner: str,
    classes: Sequence[str],
    cell_types: Sequence[str],
    given: Mapping[str, Mapping[str, float]] | None,
    builtin: Mapping[str, Mapping[str, float]],
) -> dict[str, dict[str, float]]:
    """Check and complete a ``state_shift`` parameter (class -> shared cell type -> shifted fraction).

    ``owner``, ``classes``, ``given`` and ``builtin`` are as in :func:`resolve_disease_only`; ``cell_types`` are
    the shared cell types a shift may name.

    Returns
    -------
    dict[str, dict[str, float]]
        Class -> cell type -> fraction in [0, 1], in the order of ``classes``.

    Raises
    ------
    ValueError
        If a class or cell type is unknown or a fraction is not in [0, 1].
    """
    raw = _per_class(owner, "state_shift", classes, given, builtin)
    out: dict[str, dict[str, float]] = {}
    for c in classes:
        if c not in raw:
            continue
        types = dict(raw[c] or {})  # type: ignore[call-overload]
        bad_types = sorted(set(types) - set(cell_types))
        if bad_types:
            raise ValueError(
                f"{owner}: state_shift[{c!r}] names cell type(s) {bad_types}; shared cell types are {list(cell_types)}"
            )
        bad = {t: f for t, f in types.items() if not 0.0 <= float(f) <= 1.0}
        if bad:
            raise ValueError(f"{owner}: state_shift[{c!r}] fractions must be in [0, 1], got {bad}")
        out[c] = {t: float(f) for t, f in types.items()}
    return out


@dataclass
class SimParams:
    """Parameters every simulator has; a simulator's parameters subclass it, adding its own and its defaults.

    On construction the values are checked (:func:`check_params`: one error naming every invalid value, the
    subclass's :meth:`_own_checks` included), and ``disease_only`` and ``state_shift`` are resolved against the
    simulator's built-in defaults (:func:`resolve_disease_only`, :func:`resolve_state_shift`).

    Attributes
    ----------
    classes
        Class labels, in the order patients are generated (stored as a tuple of strings).
    concentration
        Dirichlet concentration of a patient's cell-type proportions around its class mean (smaller: more
        heterogeneous patients within a class).
    state_shift_magnitude
        Size of the shift of a shifted instance (its unit is the simulator's).
    n_patients_per_class
        Patients per class.
    class_proportions
        Class -> mean proportions over the shared cell types (:meth:`shared_cell_types`; positive values,
        normalised to sum 1). None: the simulator's built-in means (see its ``class_mean_proportions``).
    disease_only
        Class -> mean fraction of its patients' instances in its own disease-only cell type ``{class}_only``
        (absent from every other class). None: :attr:`BUILTIN_DISEASE_ONLY` (for the classes present);
        ``{}``: none.
    state_shift
        Class -> shared cell type -> fraction of that type's instances in the shifted sub-state, in every
        patient of the class. None: :attr:`BUILTIN_STATE_SHIFT` (for the classes and cell types present);
        ``{}``: none.
    seed
        Seed of the patients and their instances.
    cohort
        Cohort name (``target`` or ``external``).
    patient_prefix
        Patient ids are ``{patient_prefix}{index:03d}``.
    """

    classes: tuple[str, ...]
    concentration: float
    state_shift_magnitude: float
    n_patients_per_class: int = 12
    class_proportions: dict[str, list[float]] | None = None
    disease_only: dict[str, float] | None = None
    state_shift: dict[str, dict[str, float]] | None = None
    seed: int = 0
    cohort: str = "target"
    patient_prefix: str = "P"

    BUILTIN_DISEASE_ONLY: ClassVar[Mapping[str, float]] = {}
    """The simulator's built-in ``disease_only`` (keyed by known class names)."""
    BUILTIN_STATE_SHIFT: ClassVar[Mapping[str, Mapping[str, float]]] = {}
    """The simulator's built-in ``state_shift`` (keyed by known class names)."""
    SHARED_CELL_TYPES: ClassVar[tuple[str, ...]] = ()
    """The simulator's shared cell types, unless :meth:`shared_cell_types` derives them from other fields."""

    def shared_cell_types(self) -> Sequence[str]:
        """Return the cell types every class has (those ``class_proportions`` and ``state_shift`` refer to)."""
        return self.SHARED_CELL_TYPES

    def cell_states(self, base_means: Mapping[str, np.ndarray]) -> CellStates:
        """Return the cohort's cell states: :func:`cell_states` of the shared cell types' class means ``base_means``."""
        return cell_states(self.shared_cell_types(), base_means, self.disease_only, self.state_shift)

    def _own_checks(self) -> dict[str, bool]:
        """Return the simulator's own fields -> whether each value is valid."""
        return {}

    def __post_init__(self) -> None:
        check_params(
            self,
            {
                "n_patients_per_class": self.n_patients_per_class >= 1,
                "concentration": self.concentration > 0,
                "state_shift_magnitude": self.state_shift_magnitude >= 0,
                "cohort": bool(self.cohort),
                **self._own_checks(),
            },
        )
        owner, shared = type(self).__name__, self.shared_cell_types()
        self.disease_only = resolve_disease_only(owner, self.classes, self.disease_only, self.BUILTIN_DISEASE_ONLY)
        builtin = {c: {t: f for t, f in v.items() if t in shared} for c, v in self.BUILTIN_STATE_SHIFT.items()}
        self.state_shift = resolve_state_shift(
            owner, self.classes, shared, self.state_shift, {c: v for c, v in builtin.items() if v}
        )


def lookup_class_means(params: SimParams, builtin: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    """Mean proportions of every class over its shared cell types: its ``class_proportions`` or ``builtin`` ones.

    Parameters
    ----------
    params
        A simulator's parameters.
    builtin
        The simulator's built-in means (keyed by known class names).

    Returns
    -------
    dict[str, numpy.ndarray]
        Class -> float64 vector over ``params.shared_cell_types()`` summing to 1.

    Raises
    ------
    ValueError
        If a class has no proportions (neither given nor built in), or they are not one positive finite value
        per shared cell type.
    """
    types = list(params.shared_cell_types())
    given = params.class_proportions or {}
    out = {}
    for c in params.classes:
        if c in given:
            raw = given[c]
        elif c in builtin:
            raw = builtin[c]
        else:
            known = sorted(builtin)
            raise ValueError(f"class {c!r} has no built-in proportions ({known}): give class_proportions[{c!r}]")
        p = np.asarray(raw, dtype=np.float64)
        if p.shape != (len(types),) or not np.all(np.isfinite(p)) or np.any(p <= 0):
            raise ValueError(
                f"class_proportions[{c!r}] must be {len(types)} positive finite values (over {types}), got {raw}"
            )
        out[c] = p / p.sum()
    return out


def restrict_to_classes(mapping: Mapping[str, object], classes: Sequence[str]) -> dict[str, object]:
    """Keep the entries of a per-class mapping whose class is in ``classes`` (an external cohort's subset)."""
    return {c: v for c, v in mapping.items() if c in classes}


P = TypeVar("P")


def external_cohort_params(
    params: P,
    classes: Sequence[str],
    n_patients_per_class: int,
    *,
    seed_offset: int,
    patient_prefix: str,
    per_class: Sequence[str] = ("disease_only", "state_shift"),
    **shift: Any,
) -> P:
    """Return an external cohort's parameters: a target cohort's, restricted to ``classes``, with its own patients.

    Every simulator builds its external cohort so (its ``external_*params`` function sets the defaults and the
    cohort's difference): everything not named here is the target's (cell types, class means, concentration,
    bag sizes, patient-effect sds).

    Parameters
    ----------
    params
        The target cohort's parameters.
    classes
        Classes present in the external cohort.
    n_patients_per_class
        Patients per class in the external cohort.
    seed_offset
        Added to ``params.seed``.
    patient_prefix
        The external patients' id prefix.
    per_class
        Per-class fields (class -> value) restricted to ``classes``.
    shift
        The fields that make the cohort's own difference (batch, instrument, stain).

    Returns
    -------
    P
        Parameters of ``params``'s type, with ``cohort="external"``.
    """
    restricted = {f: restrict_to_classes(getattr(params, f) or {}, classes) for f in per_class}
    return replace(
        params,
        classes=tuple(classes),
        n_patients_per_class=n_patients_per_class,
        **restricted,
        **shift,
        seed=params.seed + seed_offset,
        cohort="external",
        patient_prefix=patient_prefix,
    )


@dataclass(frozen=True)
class CellStates:
    """A cohort's cell types and states per class.

    Attributes
    ----------
    cell_types
        The shared cell types, then the disease-only cell types (one per class that has one).
    n_shared
        How many of ``cell_types`` are shared by all classes.
    disease_only_type
        Class -> the name of its disease-only cell type.
    means
        Class -> mean proportions over ``cell_types`` (the Dirichlet mean; zero on the
        disease-only types of the other classes).
    shifted_fraction
        Class -> per cell type, the probability that an instance of that type is in the
        shifted sub-state (zero for disease-only types).
    """

    cell_types: tuple[str, ...]
    n_shared: int
    disease_only_type: dict[str, str]
    means: dict[str, np.ndarray]
    shifted_fraction: dict[str, np.ndarray]


def disease_only_type_name(cls: str) -> str:
    """Name of a class's disease-only cell type: ``{cls}_only``."""
    return f"{cls}_only"


def cell_states(
    shared_types: Sequence[str],
    base_means: Mapping[str, np.ndarray],
    disease_only: Mapping[str, float] | None,
    state_shift: Mapping[str, Mapping[str, float]] | None,
) -> CellStates:
    """Combine the shared cell types' class means with disease-only types and state shifts.

    Parameters
    ----------
    shared_types
        The cell types every class has.
    base_means
        Class -> mean proportions over ``shared_types`` (summing to 1); its keys are the classes.
    disease_only
        Class -> fraction f of its instances in its disease-only type
        (:func:`disease_only_type_name`): the class mean becomes ``[(1 - f) * base, f]``.
        Resolved by :func:`resolve_disease_only`; None: none.
    state_shift
        Class -> shared type -> shifted fraction. Resolved by :func:`resolve_state_shift`;
        None: none.

    Returns
    -------
    CellStates
        The combined design.
    """
    classes = list(base_means)
    disease_only, state_shift = disease_only or {}, state_shift or {}
    do_type = {c: disease_only_type_name(c) for c in classes if c in disease_only}
    cell_types = (*shared_types, *do_type.values())
    k = len(shared_types)
    means: dict[str, np.ndarray] = {}
    shifted: dict[str, np.ndarray] = {}
    for c in classes:
        m = np.zeros(len(cell_types))
        f = disease_only.get(c, 0.0)
        m[:k] = (1.0 - f) * np.asarray(base_means[c], dtype=np.float64)
        if c in do_type:
            m[cell_types.index(do_type[c])] = f
        means[c] = m / m.sum()
        s = np.zeros(len(cell_types))
        for t, frac in state_shift.get(c, {}).items():
            s[list(shared_types).index(t)] = frac
        shifted[c] = s
    return CellStates(
        cell_types=tuple(cell_types), n_shared=k, disease_only_type=do_type, means=means, shifted_fraction=shifted
    )


def draw_instances(
    rng: np.random.Generator, states: CellStates, label: str, size: int, concentration: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one patient's proportions, and the cell type and state of each of its instances.

    Parameters
    ----------
    rng
        The patient's random generator.
    states
        The cohort's cell states.
    label
        The patient's class.
    size
        Number of instances.
    concentration
        Dirichlet concentration around the class mean (only the types the class has are drawn).

    Returns
    -------
    proportions
        The drawn proportions over ``states.cell_types`` (zero where the class has no such type).
    types
        Int64 index into ``states.cell_types`` of every instance (in random order).
    state_codes
        Int8 index into :data:`STATES` of every instance.
    """
    mean = states.means[label]
    present = np.flatnonzero(mean > 0)
    props = np.zeros(mean.size)
    props[present] = rng.dirichlet(concentration * mean[present])
    types = rng.permutation(np.repeat(np.arange(mean.size), rng.multinomial(size, props)))
    codes = np.where(types >= states.n_shared, 2, 0).astype(np.int8)
    shifted = rng.uniform(size=size) < states.shifted_fraction[label][types]
    codes[shifted] = 1
    return props, types.astype(np.int64), codes


def state_truth(states: CellStates, classes: Sequence[str], disease_only: Mapping[str, float]) -> dict[str, object]:
    """Return the JSON-serialisable part of a cohort's truth that describes its cell states.

    Parameters
    ----------
    states
        The cohort's cell states.
    classes
        The cohort's classes.
    disease_only
        The resolved ``disease_only`` parameter.

    Returns
    -------
    dict
        ``cell_types``, ``shared_cell_types``, ``states``, ``disease_only`` (class -> fraction),
        ``disease_only_types`` (class -> type), ``state_shift`` (class -> type -> fraction) and
        ``class_mean_proportions`` (class -> proportions over ``cell_types``).
    """
    shared = list(states.cell_types[: states.n_shared])
    return {
        "cell_types": list(states.cell_types),
        "shared_cell_types": shared,
        "states": list(STATES),
        "disease_only": {c: float(f) for c, f in disease_only.items()},
        "disease_only_types": dict(states.disease_only_type),
        "state_shift": {
            c: {t: float(states.shifted_fraction[c][i]) for i, t in enumerate(shared) if states.shifted_fraction[c][i]}
            for c in classes
            if np.any(states.shifted_fraction[c] > 0)
        },
        "class_mean_proportions": {c: [float(x) for x in states.means[c]] for c in classes},
    }
