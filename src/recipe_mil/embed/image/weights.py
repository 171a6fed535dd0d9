"""Encoder weights from a local file: checkpoints, DinoBloom/DINOv2 key conversion, strict loading, timm models."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recipe_mil.embed.image.params import DINOBLOOM_MODELS, IMAGENET_MEAN, IMAGENET_STD, check_encoder_name

_PATCH = 14  # DinoBloom / DINOv2 patch size
_HEAD_PREFIXES = ("dino_head.", "ibot_head.", "head.")  # training heads dropped from DinoBloom checkpoints
_WRAPPER_KEYS = ("teacher", "model", "state_dict", "model_state_dict", "module")


class EncoderWeightsError(ValueError):
    """An encoder's weights file is missing or does not match the encoder."""


def _load_weights_file(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """Read a weights file (``torch.load(weights_only=True)`` or safetensors) from a local path."""
    p = Path(path)
    if not p.is_file():
        raise EncoderWeightsError(f"{p}: weights file does not exist (weights are never downloaded)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p), device="cpu")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor objects refused by weights_only
        raise EncoderWeightsError(
            f"{p}: cannot read weights with torch.load(weights_only=True) ({type(exc).__name__}: {exc}); "
            "save a plain state dict of tensors"
        ) from exc
    if not isinstance(obj, Mapping):
        raise EncoderWeightsError(f"{p}: expected a state dict (a mapping), got {type(obj).__name__}")
    return obj


def _unwrap_state_dict(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Take the weights out of a training checkpoint (``teacher``, ``model``, ``state_dict``...)."""
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise EncoderWeightsError(f"no tensors found in the checkpoint (top-level keys: {sorted(obj)[:10]})")
    return state


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if any(k.startswith(prefix) for k in state):
        return {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def convert_dinobloom_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Turn a DinoBloom / DINOv2 checkpoint into a timm ``vit_*_patch14_dinov2`` state dict.

    Accepts the official DinoBloom layout (``{"teacher": {"backbone.cls_token": ...,
    "dino_head.mlp.0.weight": ..., ...}}``), a DINOv2 training checkpoint
    (``{"model": {"teacher.backbone.*": ..., "student.*": ...}}``), a DINOv2 hub state
    dict and a timm state dict. Drops the training heads (``dino_head.*``, ``ibot_head.*``, ``head.*``) and the
    ``mask_token``; strips ``module.`` and ``backbone.`` prefixes; maps DINOv2's chunked
    blocks (``blocks.<chunk>.<i>.``) to ``blocks.<i>.`` and the ViT-g SwiGLU weights
    (``mlp.w12``, ``mlp.w3``) to timm's ``mlp.fc1``, ``mlp.fc2``.

    Parameters
    ----------
    checkpoint
        The loaded checkpoint.

    Returns
    -------
    dict[str, torch.Tensor]
        Keys of timm's DINOv2 vision transformer.
    """
    state = _strip_prefix(_unwrap_state_dict(checkpoint), "module.")
    if any(k.startswith("teacher.") for k in state):  # a DINOv2 training checkpoint: {"model": {"teacher.*", ...}}
        state = {k.removeprefix("teacher."): v for k, v in state.items() if k.startswith("teacher.")}
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(_HEAD_PREFIXES) or key == "mask_token":
            continue
        key = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", key)
        key = re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", key)
        key = re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", key)
        out[key] = value
    return out


def create_dinobloom_model(name: str, *, image_size: int = 224) -> nn.Module:
    """Build a DinoBloom network with random weights (timm, ``pretrained=False``).

    Parameters
    ----------
    name
        ``dinobloom-s``, ``-b``, ``-l`` or ``-g``.
    image_size
        Input side in pixels (a multiple of 14); 224 gives the checkpoints' 257-token
        position embedding (16 x 16 patches + class token).

    Returns
    -------
    torch.nn.Module
        A timm ``VisionTransformer`` with ``num_classes=0`` (output: the normalised class token).
        Built on the current default device (use ``torch.device("meta")`` to only check shapes).
    """
    import timm

    if name not in DINOBLOOM_MODELS:
        raise ValueError(f"unknown DinoBloom model {name!r}; expected one of {list(DINOBLOOM_MODELS)}")
    if image_size % _PATCH:
        raise ValueError(f"{name}: image_size must be a multiple of {_PATCH}, got {image_size}")
    arch, _ = DINOBLOOM_MODELS[name]
    return timm.create_model(arch, pretrained=False, num_classes=0, img_size=image_size)


def load_dinobloom_weights(model: nn.Module, checkpoint: Mapping[str, Any], *, name: str = "dinobloom") -> None:
    """Load a DinoBloom checkpoint into a model from :func:`create_dinobloom_model`, strictly.

    Parameters
    ----------
    model
        The network.
    checkpoint
        The loaded checkpoint (see :func:`convert_dinobloom_state_dict`).
    name
        Used in error messages.

    Raises
    ------
    EncoderWeightsError
        If keys are missing or unexpected, or a shape differs (a position embedding for
        another input size is reported with the ``image_size`` that would match).
    """
    state = convert_dinobloom_state_dict(checkpoint)
    _check_pos_embed(model, state, name=name)
    _load_strict(model, state, name=name)


def _check_pos_embed(model: nn.Module, state: Mapping[str, torch.Tensor], *, name: str) -> None:
    want = getattr(model, "pos_embed", None)
    have = state.get("pos_embed")
    if want is None or have is None or have.ndim != 3 or have.shape[1] == want.shape[1]:
        return  # same number of tokens: any other difference is reported by the strict load
    n_tokens = int(have.shape[1])
    grid = math.isqrt(max(n_tokens - 1, 0))
    hint = f" (a {grid}x{grid} grid + class token: image_size={grid * _PATCH})" if grid * grid == n_tokens - 1 else ""
    raise EncoderWeightsError(
        f"{name}: checkpoint pos_embed has {n_tokens} tokens{hint}, but the model built for this image_size "
        f"expects {int(want.shape[1])}; set image_size to match the checkpoint"
    )


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], *, name: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:5]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:5]})")
        if shapes:
            parts.append(f"{len(shapes)} with another shape (e.g. {shapes[:3]})")
        raise EncoderWeightsError(f"{name}: weights do not match the model: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True, assign=any(p.is_meta for p in model.parameters()))


def _float32(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _has_meta(model: nn.Module) -> bool:
    return any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def _build_and_load(build: Callable[[], nn.Module], state: Mapping[str, torch.Tensor], *, name: str) -> nn.Module:
    """Build a network and load ``state`` strictly, without a costly random initialisation.

    The network is built on the meta device and the checkpoint's tensors are assigned to
    it; a network that keeps tensors outside its state dict (non-persistent buffers) is
    instead built on the CPU and loaded by copy.
    """
    with torch.device("meta"):
        model = build()
    state = _float32(state)
    _check_pos_embed(model, state, name=name)
    _load_strict(model, state, name=name)
    if _has_meta(model):
        model = build()
        _load_strict(model, state, name=name)
    return model


def _create_timm_model(arch: str, image_size: int) -> nn.Module:
    check_encoder_name(f"timm:{arch}")  # never hand timm a hub id or URL, whoever calls this
    import timm

    try:  # vision transformers take the input size; other families do not accept the argument
        return timm.create_model(arch, pretrained=False, num_classes=0, img_size=image_size)
    except TypeError:
        return timm.create_model(arch, pretrained=False, num_classes=0)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names)


def _timm_output_dim(model: nn.Module, image_size: int) -> int:
    """Width of the pooled pre-logits of a model built on the meta device (shape-only forward)."""
    try:
        with torch.no_grad():
            return int(model(torch.empty(1, 3, image_size, image_size, device="meta")).shape[-1])
    except Exception:  # some ops lack meta kernels: fall back to timm's attributes
        return int(getattr(model, "head_hidden_size", None) or model.num_features)


def timm_dim(arch: str, *, image_size: int = 224) -> int:
    """Width of a timm backbone's pooled features, from a model built on the meta device (no weights).

    Parameters
    ----------
    arch
        A plain timm architecture name (without the ``timm:`` prefix).
    image_size
        Input side, for models whose width depends on it.

    Returns
    -------
    int
        The feature width.
    """
    with torch.device("meta"):
        model = _create_timm_model(arch, image_size)
    return _timm_output_dim(model, image_size)


@dataclass
class LoadedNetwork:
    """A network with its weights loaded, and what an encoder needs to run it.

    Attributes
    ----------
    model
        The network (float32, on the CPU, in training mode as built).
    dim
        Width of its output features.
    mean, std
        Per-channel normalisation of the 0-1 input it was trained with.
    """

    model: nn.Module
    dim: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def load_network(encoder: str, weights: str | os.PathLike[str], *, image_size: int = 224) -> LoadedNetwork:
    """Build a DinoBloom or timm network and load its weights from a local file, strictly.

    This is the slow part of an embedding job (a ViT-g checkpoint is 4.5 GB): call it once per job.

    Parameters
    ----------
    encoder
        ``dinobloom-s/b/l/g`` or ``timm:<architecture>``.
    weights
        Local weights file (see :class:`~recipe_mil.embed.image.params.ImageEmbedParams`).
    image_size
        Side of the network input.

    Returns
    -------
    LoadedNetwork
        The network and its output width and input normalisation.

    Raises
    ------
    EncoderWeightsError
        If the file is missing or unreadable, or its weights do not match the network.
    """
    checkpoint = _load_weights_file(weights)
    label = f"{encoder} ({weights})"
    if encoder in DINOBLOOM_MODELS:
        model = _build_and_load(
            lambda: create_dinobloom_model(encoder, image_size=image_size),
            convert_dinobloom_state_dict(checkpoint),
            name=label,
        )
        return LoadedNetwork(model, DINOBLOOM_MODELS[encoder][1], IMAGENET_MEAN, IMAGENET_STD)
    check_encoder_name(encoder)
    arch = encoder.removeprefix("timm:")
    with torch.device("meta"):
        shape_model = _create_timm_model(arch, image_size)
    dim = _timm_output_dim(shape_model, image_size)
    state = _strip_prefix(_unwrap_state_dict(checkpoint), "module.")
    drop = _classifier_prefixes(shape_model)
    state = {k: v for k, v in state.items() if not (drop and k.startswith(drop))}
    model = _build_and_load(lambda: _create_timm_model(arch, image_size), state, name=label)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    return LoadedNetwork(model, dim, tuple(float(m) for m in mean), tuple(float(s) for s in std))
