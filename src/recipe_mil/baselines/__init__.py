"""Baselines that make synthetic bags from the same pool: shuffle, ReMix, PseMix-style mixup.

Every baseline returns a :class:`~recipe_mil.recipes.generate.SyntheticSet` and takes these arguments by the
same names (each function documents its others):

``x``
    The pool's embeddings, one row per row of ``obs`` (shuffle needs none: it draws row indices).
``obs``
    The pool's ``obs`` (``patient``, ``label``).
``classes``
    Classes to generate (those with pooled patients).
``n_per_class``
    Bags per class.
``seed``
    Random seed.
"""

from recipe_mil.baselines.psemix import psemix_bags, pseudo_bags
from recipe_mil.baselines.remix import remix_bags
from recipe_mil.baselines.shuffle import shuffle_bags

__all__ = ["psemix_bags", "pseudo_bags", "remix_bags", "shuffle_bags"]
