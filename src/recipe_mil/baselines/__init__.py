"""Baselines that make synthetic bags from the same pool: shuffle, ReMix, PseMix-style mixup."""

from recipe_mil.baselines.psemix import psemix_bags, pseudo_bags
from recipe_mil.baselines.remix import remix_bags
from recipe_mil.baselines.shuffle import shuffle_bags

__all__ = ["psemix_bags", "pseudo_bags", "remix_bags", "shuffle_bags"]
