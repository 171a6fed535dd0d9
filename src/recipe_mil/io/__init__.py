"""Readers and writers for the workflow's file contracts."""

from recipe_mil.io.atomic import atomic_path, write_text_atomic
from recipe_mil.io.bags import Bag, BagFileError, read_bag, read_bags, write_bag

__all__ = ["Bag", "BagFileError", "atomic_path", "read_bag", "read_bags", "write_bag", "write_text_atomic"]
