"""Attention-based multiple instance learning: the module, bag batching, training and prediction."""

from recipe_mil.mil.data import BagCollection, balanced_epoch, collate, concat_collections
from recipe_mil.mil.model import GatedAttentionMIL
from recipe_mil.mil.train import FitResult, TrainConfig, fit_mil, predict, resolve_device

__all__ = [
    "BagCollection",
    "FitResult",
    "GatedAttentionMIL",
    "TrainConfig",
    "balanced_epoch",
    "collate",
    "concat_collections",
    "fit_mil",
    "predict",
    "resolve_device",
]
