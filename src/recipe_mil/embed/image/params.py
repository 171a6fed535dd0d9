"""Names and options of the image encoders (which exist, which names are refused, which need a GPU), and job batches.

Imports neither torch nor timm, so that the workflow can read it when it plans jobs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from recipe_mil.config import check_values

DINOBLOOM_MODELS: dict[str, tuple[str, int]] = {
    "dinobloom-s": ("vit_small_patch14_dinov2", 384),
    "dinobloom-b": ("vit_base_patch14_dinov2", 768),
    "dinobloom-l": ("vit_large_patch14_dinov2", 1024),
    "dinobloom-g": ("vit_giant_patch14_dinov2", 1536),
}
"""DinoBloom encoder name -> (timm architecture, embedding width)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


TIMM_NAME = re.compile(r"[A-Za-z0-9_.-]+")
"""A timm architecture name, optionally with its pretrained tag (``vit_small_patch16_224.augreg_in21k``): no
``:`` or ``/``, so never a hub id (``hf-hub:org/model``), a URL or a path that timm would fetch from."""


def check_encoder_name(name: str) -> None:
    """Refuse an encoder name that is unknown or would make timm reach the network.

    Parameters
    ----------
    name
        ``morphology``, ``dinobloom-s/b/l/g`` or ``timm:<architecture>``.

    Raises
    ------
    ValueError
        For an unknown name, or a ``timm:`` name that is a hub id or URL (``timm:hf-hub:...``),
        which timm would download from: nothing is ever downloaded here.
    """
    if name == "morphology" or name in DINOBLOOM_MODELS:
        return
    if name.startswith("timm:") and len(name) > len("timm:"):
        arch = name.removeprefix("timm:")
        if TIMM_NAME.fullmatch(arch):
            return
        raise ValueError(
            f"image encoder {name!r}: {arch!r} is not a plain timm architecture name; hub ids and URLs "
            "(hf-hub:..., hf_hub:..., http...) are refused because nothing is ever downloaded: name the "
            "architecture (e.g. 'timm:vit_small_patch16_224') and give its weights as a local file in image.weights"
        )
    known = ["morphology", *DINOBLOOM_MODELS, "timm:<model-name>"]
    raise ValueError(f"unknown image encoder {name!r}; expected one of {known}")


@dataclass
class ImageEmbedParams:
    """Options of the image embedding.

    Attributes
    ----------
    encoder
        ``"morphology"``, ``"dinobloom-s"``, ``"dinobloom-b"``, ``"dinobloom-l"``,
        ``"dinobloom-g"`` or ``"timm:<model-name>"``.
    weights
        Local path of the encoder's weights (``.pth``/``.pt``/``.bin`` read with
        ``torch.load(weights_only=True)``, or ``.safetensors``). Required by every encoder
        but ``morphology``; never downloaded.
    batch_size
        Crops per batch.
    num_workers
        DataLoader worker processes reading and preprocessing crops (0: in the main process).
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        Ignored by ``morphology``.
    strict
        If True, an unreadable image fails the patient with an error naming the file;
        otherwise it is skipped, logged and counted.
    image_size
        Side (px) of the square network input; a multiple of 14 for DinoBloom, whose
        checkpoints hold a 257-token position embedding for 224 px. Ignored by ``morphology``.
    log_every
        Log progress every this many batches.
    """

    encoder: str = "morphology"
    weights: str | None = None
    batch_size: int = 64
    num_workers: int = 0
    device: str = "auto"
    strict: bool = False
    image_size: int = 224
    log_every: int = 10

    def __post_init__(self) -> None:
        checks = {
            "batch_size": self.batch_size >= 1,
            "num_workers": self.num_workers >= 0,
            "image_size": self.image_size >= 16,
            "log_every": self.log_every >= 1,
        }
        check_values(self, checks)
        check_encoder_name(self.encoder)


def encoder_uses_gpu(name: str) -> bool:
    """Whether an encoder runs a network that a GPU speeds up (DinoBloom and timm; not ``morphology``).

    The workflow asks a GPU (``resources: gpu=1``) only for these encoders.

    Parameters
    ----------
    name
        An encoder name (see :func:`check_encoder_name`).

    Returns
    -------
    bool
        False for ``morphology`` (hand-crafted features on the CPU), True otherwise.
    """
    check_encoder_name(name)
    return name != "morphology"


def patient_batches(patients: Sequence[str], per_job: int) -> list[list[str]]:
    """Cut patients, in the given order, into consecutive batches of ``per_job`` (the last one may be smaller).

    A batch is what one embedding job embeds with one encoder load. Consecutive batches in sheet order keep
    the batches of existing patients unchanged when patients are appended to a sheet, so that only the last
    batch and the new ones are embedded again.

    Parameters
    ----------
    patients
        Patient ids, in sheet order.
    per_job
        Patients per batch (at least 1).

    Returns
    -------
    list[list[str]]
        ``ceil(len(patients) / per_job)`` batches.
    """
    if per_job < 1:
        raise ValueError(f"patients per job must be at least 1, got {per_job}")
    patients = list(patients)
    return [patients[i : i + per_job] for i in range(0, len(patients), per_job)]
