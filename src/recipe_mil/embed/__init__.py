"""Instance encoders, one submodule per modality.

Import the submodule you need (``recipe_mil.embed.scrna``...): each pulls in its own
heavy dependencies (scanpy, torch, flowkit), so this package imports none of them.
"""
