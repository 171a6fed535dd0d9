"""Typed sections of the workflow config, built once from the validated config.

One frozen dataclass per section the library receives (``generate``, ``select``, ``remix``,
``psemix``, ``mil``), gathered by :class:`StudyConfig`. Their defaults equal those of
``workflow/schemas/config.schema.yaml`` (``tests/test_config_defaults.py`` compares every
one), so a key left out of a config means the same in the workflow and in the library.
Dependency-free on purpose: the workflow may build it at parse time without importing torch.

The sections of the pool, GMM and recipe steps are :class:`recipe_mil.recipes.pipeline.RecipeConfig`,
those of the embedding steps the modality's ``*EmbedParams``; the same test covers them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

POLICIES = ("most_uncertain", "confident_consistent")
"""Selection policies of ``select.policy`` (see :func:`recipe_mil.select.select_bags`)."""
UNSEEN_CLASS_SCORERS = ("cross_fit", "reference")
"""Values of ``select.unseen_class``."""


def check_values(params: Any, checks: Mapping[str, bool]) -> None:
    """Raise one error naming every field of a parameter dataclass whose check failed, with its value.

    Parameters
    ----------
    params
        The dataclass instance (its type is named in the message).
    checks
        Field name -> whether its value is valid.

    Raises
    ------
    ValueError
        ``"<Type>: invalid value(s): field=value, ..."`` if any check failed.
    """
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        detail = ", ".join(f"{name}={getattr(params, name)!r}" for name in bad)
        raise ValueError(f"{type(params).__name__}: invalid value(s): {detail}")


@dataclass(frozen=True)
class GenerateConfig:
    """Settings shared by every generator of synthetic patients (config key ``generate``).

    Attributes
    ----------
    n_per_class
        Synthetic patients per class and fold.
    instance_source
        Where a recipe's instances come from (see :func:`recipe_mil.recipes.generate.candidate_mask`).
    missing_class_source
        The same for a class whose recipe was learned on the external cohort only.
    """

    n_per_class: int = 20
    instance_source: str = "class"
    missing_class_source: str = "target"


@dataclass(frozen=True)
class SelectConfig:
    """Settings of the uncertainty selection (config key ``select``).

    Attributes
    ----------
    passes
        Monte-Carlo dropout passes per candidate.
    policy
        One of :data:`POLICIES` (see :func:`recipe_mil.select.select_bags`).
    oversample
        Candidates generated per kept synthetic patient.
    unseen_class
        Who scores the candidates of a class without real training patients: ``cross_fit``
        (models trained on real + the other half of the candidates) or ``reference`` (the
        ``real_only`` model, which cannot predict that class).
    """

    passes: int = 20
    policy: str = "most_uncertain"
    oversample: int = 3
    unseen_class: str = "cross_fit"

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown selection policy {self.policy!r}; choose one of {POLICIES}")
        if self.unseen_class not in UNSEEN_CLASS_SCORERS:
            raise ValueError(f"select.unseen_class must be one of {UNSEEN_CLASS_SCORERS}, got {self.unseen_class!r}")


@dataclass(frozen=True)
class RemixConfig:
    """ReMix baseline (config key ``remix``; see :func:`recipe_mil.baselines.remix_bags`)."""

    n_prototypes: int = 8
    modes: tuple[str, ...] = ("replace", "append", "interpolate", "covary")
    p: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "modes", tuple(self.modes))


@dataclass(frozen=True)
class PsemixConfig:
    """PseMix baseline (config key ``psemix``; see :func:`recipe_mil.baselines.psemix_bags`)."""

    n_pseudo: int = 4
    n_prototypes: int = 8
    alpha: float = 1.0


@dataclass
class TrainConfig:
    """Hyperparameters of one MIL training run.

    Attributes
    ----------
    hidden
        Width of the instance encoder.
    attention_dim
        Width of the gated attention network.
    dropout
        Dropout probability (encoder and classifier).
    lr
        AdamW learning rate.
    weight_decay
        AdamW weight decay.
    epochs
        Maximum number of epochs.
    patience
        Stop after this many epochs in which neither the kept validation score (balanced
        accuracy, then loss) nor the lowest validation loss improved.
    min_epochs
        Never stop early before this many epochs (an untrained model can score a lucky
        validation accuracy on a handful of patients).
    batch_size
        Bags per batch.
    max_instances
        Random subsample of at most this many instances per bag during training; None
        keeps every instance. Validation and prediction always use every instance.
    seed
        Seed of the weight initialisation, dropout, sampling and subsampling.
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    threads
        If given, passed to :func:`torch.set_num_threads`.
    """

    hidden: int = 64
    attention_dim: int = 32
    dropout: float = 0.25
    lr: float = 5e-4
    weight_decay: float = 1e-4
    epochs: int = 40
    patience: int = 10
    min_epochs: int = 10
    batch_size: int = 8
    max_instances: int | None = 512
    seed: int = 0
    device: str = "auto"
    threads: int | None = None


@dataclass(frozen=True)
class MilConfig:
    """The config key ``mil``: one training's hyperparameters plus the study's training design.

    Attributes
    ----------
    train
        Hyperparameters shared by every training (``seed`` and ``threads`` are set per job
        by :meth:`train_config`).
    n_seeds
        Trainings per fold.
    unseen_class_val_fraction
        Share of a missing class's training bags held out for early stopping.
    keep_models
        Whether every training job also writes its models (``model.pt`` per method, seed and fold); nothing in
        the workflow reads them, and ``recipe-mil train`` trains the model to keep.
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    n_seeds: int = 3
    unseen_class_val_fraction: float = 0.25
    keep_models: bool = False

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]) -> MilConfig:
        """Build from the config's ``mil`` mapping (flat: training and study keys side by side)."""
        study = {f.name for f in fields(cls)} - {"train"}
        unknown = set(section) - study - _TRAIN_KEYS
        if unknown:
            raise TypeError(f"mil: unknown keys {sorted(unknown)}")
        return cls(
            train=TrainConfig(**{k: v for k, v in section.items() if k not in study}),
            **{k: v for k, v in section.items() if k in study},
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the section flat, as in the config (every key, defaults included)."""
        train = {k: getattr(self.train, k) for k in sorted(_TRAIN_KEYS)}
        study = {k: getattr(self, k) for k in ("n_seeds", "unseen_class_val_fraction", "keep_models")}
        return {**train, **study}

    def train_config(self, *, seed: int, threads: int | None = None) -> TrainConfig:
        """Return the hyperparameters of one training job."""
        return replace(self.train, seed=seed, threads=threads)

    @property
    def device(self) -> str:
        """Where training, prediction and selection scoring run."""
        return self.train.device


_TRAIN_KEYS = {f.name for f in fields(TrainConfig)} - {"seed", "threads"}
"""The config's ``mil`` keys that are training hyperparameters (seed and threads are per job)."""


SECTIONS: dict[str, type] = {
    "generate": GenerateConfig,
    "select": SelectConfig,
    "remix": RemixConfig,
    "psemix": PsemixConfig,
    "mil": MilConfig,
}
"""Config section -> its dataclass."""


@dataclass(frozen=True)
class StudyConfig:
    """The typed sections of one workflow config.

    Attributes
    ----------
    seed
        The base seed.
    generate, select, remix, psemix, mil
        The sections of the same names.
    """

    seed: int = 0
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    remix: RemixConfig = field(default_factory=RemixConfig)
    psemix: PsemixConfig = field(default_factory=PsemixConfig)
    mil: MilConfig = field(default_factory=MilConfig)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StudyConfig:
        """Build from a (validated) workflow config; a missing section or key takes its default."""
        built: dict[str, Any] = {}
        for name, kind in SECTIONS.items():
            section = config.get(name) or {}
            built[name] = kind.from_dict(section) if hasattr(kind, "from_dict") else kind(**section)
        return cls(seed=int(config.get("seed", 0)), **built)
