"""Per-patient bags of single-cell image embeddings (docs/method.md §1, modality ``image``).

A patient is one folder of single-cell crops (PNG, JPEG or TIFF, any size). Every crop
is read as 8-bit RGB (:func:`read_image`) and embedded by a frozen encoder:

``dinobloom-s``, ``dinobloom-b``, ``dinobloom-l``, ``dinobloom-g``
    DinoBloom (DINOv2 ViT-S/B/L/g with 14-px patches fine-tuned on blood cells;
    384/768/1024/1536-d class token) built with timm (``vit_*_patch14_dinov2``,
    ``pretrained=False``) for ``image_size`` (224) input, weights from a local file:
    the official checkpoint layout (``{"teacher": {"backbone.<DINOv2 key>": ...,
    "dino_head.*": ...}}`` with a 257-token ``pos_embed``) or a plain state dict.
    Loading is strict. Crops are padded to a square with their border colour, resized
    (bicubic) and normalised with the ImageNet mean and sd.
``timm:<model-name>``
    Any timm backbone (``pretrained=False``, ``num_classes=0``) with weights from a
    local file; the features are its pooled pre-logits. Classifier weights in the file
    are dropped; everything else must match.
``morphology`` (the offline default, no weights)
    Hand-crafted features of the central white cell (:func:`morphology_features`):
    segmentation of cell and nucleus by colour, then size, shape, colour and texture.

Nothing is ever downloaded: there is no hub access; the weights come from
``ImageEmbedParams.weights``, a local path. Model names that would make timm reach a hub
or a URL (``timm:hf-hub:...``, ``timm:hf_hub:...``, anything with ``:`` or ``/`` after the
``timm:`` prefix) are refused (:func:`check_encoder_name`).

The ViT encoders run batched through a :class:`torch.utils.data.DataLoader` (reading and
preprocessing in ``num_workers`` processes), under bf16 autocast on a GPU and in float32
on the CPU; progress goes to the ``recipe_mil.embed.image`` logger. One embedding job
embeds a batch of patients with one encoder load (:func:`write_image_bags`).

The steps live in sub-modules, and every public name is importable from here:

- :mod:`~recipe_mil.embed.image.params`: encoder names, :class:`ImageEmbedParams`, which encoders
  need a GPU, batches of patients per job (no torch: the workflow reads it when it plans jobs).
- :mod:`~recipe_mil.embed.image.reading`: listing a patient's crops and reading them as 8-bit RGB.
- :mod:`~recipe_mil.embed.image.morphology`: the ``morphology`` encoder's segmentation and features.
- :mod:`~recipe_mil.embed.image.weights`: weights files, DinoBloom key conversion, strict loading.
- :mod:`~recipe_mil.embed.image.encoders`: the encoders (DataLoader, preprocessing, forward pass).
- :mod:`~recipe_mil.embed.image.embed`: building an encoder, embedding folders, writing bags.

The names are imported on first use, so that ``from recipe_mil.embed.image import check_encoder_name``
(the config check, when the workflow is parsed) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # params: no torch
    "DINOBLOOM_MODELS": "recipe_mil.embed.image.params",
    "IMAGENET_MEAN": "recipe_mil.embed.image.params",
    "IMAGENET_STD": "recipe_mil.embed.image.params",
    "TIMM_NAME": "recipe_mil.embed.image.params",
    "ImageEmbedParams": "recipe_mil.embed.image.params",
    "check_encoder_name": "recipe_mil.embed.image.params",
    "encoder_uses_gpu": "recipe_mil.embed.image.params",
    "patient_batches": "recipe_mil.embed.image.params",
    # reading
    "IMAGE_SUFFIXES": "recipe_mil.embed.image.reading",
    "ImageInputError": "recipe_mil.embed.image.reading",
    "list_image_files": "recipe_mil.embed.image.reading",
    "read_image": "recipe_mil.embed.image.reading",
    "to_rgb8": "recipe_mil.embed.image.reading",
    # morphology
    "morphology_feature_names": "recipe_mil.embed.image.morphology",
    "morphology_features": "recipe_mil.embed.image.morphology",
    "segment_cell": "recipe_mil.embed.image.morphology",
    # weights
    "EncoderWeightsError": "recipe_mil.embed.image.weights",
    "LoadedNetwork": "recipe_mil.embed.image.weights",
    "convert_dinobloom_state_dict": "recipe_mil.embed.image.weights",
    "create_dinobloom_model": "recipe_mil.embed.image.weights",
    "load_dinobloom_weights": "recipe_mil.embed.image.weights",
    "load_network": "recipe_mil.embed.image.weights",
    "timm_dim": "recipe_mil.embed.image.weights",
    # encoders
    "Encoder": "recipe_mil.embed.image.encoders",
    "MorphologyEncoder": "recipe_mil.embed.image.encoders",
    "TorchEncoder": "recipe_mil.embed.image.encoders",
    # embedding
    "ImagePatient": "recipe_mil.embed.image.embed",
    "embed_image_folder": "recipe_mil.embed.image.embed",
    "encoder_dim": "recipe_mil.embed.image.embed",
    "load_encoder": "recipe_mil.embed.image.embed",
    "write_image_bag": "recipe_mil.embed.image.embed",
    "write_image_bags": "recipe_mil.embed.image.embed",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name's sub-module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
