"""Embedding patients: an encoder built once from its name and weights, folders to features, bags to files.

An embedding job embeds a batch of patients (:func:`write_image_bags`): it checks every folder, loads the
encoder once (the slow part for a large network) and writes one bag per patient;
:func:`~recipe_mil.embed.image.params.patient_batches` cuts a cohort into such batches.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recipe_mil.embed.image.encoders import Encoder, MorphologyEncoder, TorchEncoder
from recipe_mil.embed.image.morphology import morphology_feature_names
from recipe_mil.embed.image.params import DINOBLOOM_MODELS, ImageEmbedParams, check_encoder_name
from recipe_mil.embed.image.reading import ImageInputError, list_image_files
from recipe_mil.embed.image.weights import EncoderWeightsError, load_network, timm_dim
from recipe_mil.io.bags import instance_truth, write_bag

logger = logging.getLogger(__name__)


def encoder_dim(name: str, *, image_size: int = 224) -> int:
    """Embedding width of an encoder, without loading any weights.

    Parameters
    ----------
    name
        An encoder name (see :class:`ImageEmbedParams`).
    image_size
        Input size, used only for ``timm:`` models whose width depends on it.

    Returns
    -------
    int
        384/768/1024/1536 for DinoBloom S/B/L/G, the number of morphology features, or a
        timm model's pooled feature width.
    """
    check_encoder_name(name)
    if name == "morphology":
        return len(morphology_feature_names())
    if name in DINOBLOOM_MODELS:
        return DINOBLOOM_MODELS[name][1]
    return timm_dim(name.removeprefix("timm:"), image_size=image_size)


def load_encoder(params: ImageEmbedParams) -> Encoder:
    """Build the encoder named by ``params.encoder``, with its weights from a local file.

    Parameters
    ----------
    params
        Embedding options.

    Returns
    -------
    Encoder
        Callable on a list of images or a folder.

    Raises
    ------
    EncoderWeightsError
        If a network encoder has no weights path, the file is missing or unreadable, or
        its weights do not match the network (strict loading).
    """
    common = dict(batch_size=params.batch_size, num_workers=params.num_workers, log_every=params.log_every)
    if params.encoder == "morphology":
        return MorphologyEncoder(**common)
    if not params.weights:
        raise EncoderWeightsError(
            f"encoder {params.encoder!r} needs ImageEmbedParams.weights, a local weights file "
            "(nothing is downloaded); use encoder='morphology' to run without weights"
        )
    net = load_network(params.encoder, params.weights, image_size=params.image_size)
    logger.info("loaded %s weights from %s", params.encoder, params.weights)
    return TorchEncoder(
        net.model,
        name=params.encoder,
        dim=net.dim,
        image_size=params.image_size,
        mean=net.mean,
        std=net.std,
        device=params.device,
        **common,
    )


def embed_image_folder(
    folder: str | os.PathLike[str], params: ImageEmbedParams, *, encoder: Encoder | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Embed one patient's folder of crops.

    Parameters
    ----------
    folder
        The patient's folder.
    params
        Embedding options (``strict`` applies here).
    encoder
        A loaded encoder to reuse across patients; None loads ``params.encoder``.

    Returns
    -------
    features
        float32 array (n_crops, d).
    instance_ids
        File names of the embedded crops.

    Raises
    ------
    ImageInputError
        See :meth:`Encoder.embed_folder`.
    """
    enc = encoder if encoder is not None else load_encoder(params)
    return enc.embed_folder(folder, strict=params.strict)


def write_image_bag(
    folder: str | os.PathLike[str],
    bag_path: str | os.PathLike[str],
    *,
    patient: str,
    label: str,
    params: ImageEmbedParams,
    encoder: Encoder | None = None,
    truth: pd.DataFrame | None = None,
) -> int:
    """Embed one patient's folder of crops and write its bag file (docs/method.md §9); return its crop count.

    The bag is written by :func:`~recipe_mil.io.bags.write_bag`: ``bag_path``, ``patient`` and ``label`` go
    there, and so does ``truth``, the per-crop truth of simulated data indexed by file name
    (:func:`recipe_mil.simulate.image.crop_truth`; None for real data). ``encoder`` is a loaded encoder to
    reuse; None loads ``params.encoder``.
    """
    enc = encoder if encoder is not None else load_encoder(params)
    features, ids = enc.embed_folder(folder, strict=params.strict)
    write_bag(
        bag_path,
        features,
        ids,
        patient=patient,
        label=label,
        encoder=enc.name,
        extra_attrs=(
            {"image_size": int(params.image_size), "weights": Path(params.weights or "").name}
            if enc.name != "morphology"
            else None
        ),
        truth=instance_truth(truth, ids, source=f"{folder} (simulator truth)"),
    )
    return int(features.shape[0])


@dataclass(frozen=True)
class ImagePatient:
    """One patient of an embedding job.

    Attributes
    ----------
    patient
        Patient id (stored in the bag).
    label
        Class label (stored in the bag).
    folder
        The patient's folder of crops.
    bag
        The bag file to write.
    truth
        Simulated data: the per-crop truth (see :func:`write_image_bag`); None for real data.
    """

    patient: str
    label: str
    folder: str | os.PathLike[str]
    bag: str | os.PathLike[str]
    truth: pd.DataFrame | None = None


def _failure(p: ImagePatient, exc: Exception) -> str:
    return f"patient {p.patient} ({p.folder}): {exc}"


def write_image_bags(
    patients: Sequence[ImagePatient], params: ImageEmbedParams, *, encoder: Encoder | None = None
) -> list[int]:
    """Embed several patients with one encoder and write their bags: what one embedding job does.

    Every folder is checked first (it exists and holds image files), before the encoder is loaded, so
    that a wrong path fails at once and not after loading a large network. The encoder is then loaded
    once and every patient is embedded with it. A patient whose crops cannot be used (every file
    unreadable, or one unreadable file with ``params.strict``) does not stop the others; the function
    raises at the end, naming every such patient with its folder and reason. The log ends with the
    job's throughput counting the encoder load (crops per second of wall time).

    Parameters
    ----------
    patients
        The patients of the job (ids unique).
    params
        Embedding options.
    encoder
        A loaded encoder to use; None loads ``params.encoder`` (once).

    Returns
    -------
    list[int]
        Instances written per patient, in the order of ``patients``.

    Raises
    ------
    ImageInputError
        If a folder is missing or holds no image file (before loading the encoder), or a patient's
        crops cannot be embedded (after the others are written); the message names each patient and
        folder.
    ValueError
        If a patient id occurs twice.
    """
    ids = [p.patient for p in patients]
    if len(set(ids)) != len(ids):
        raise ValueError(
            f"patients appear more than once in one embedding job: {sorted({i for i in ids if ids.count(i) > 1})}"
        )
    missing = []
    for p in patients:
        try:
            list_image_files(p.folder)
        except ImageInputError as exc:
            missing.append(_failure(p, exc))
    if missing:
        raise ImageInputError(
            f"{len(missing)} of {len(patients)} patient folder(s) cannot be used:\n" + "\n".join(missing)
        )
    t0 = time.perf_counter()
    enc = encoder if encoder is not None else load_encoder(params)
    load_s = time.perf_counter() - t0
    logger.info("encoder %s ready in %.2f s for %d patient(s)", enc.name, load_s, len(patients))
    counts: list[int] = []
    failed: list[str] = []
    for p in patients:
        try:
            counts.append(
                write_image_bag(
                    p.folder, p.bag, patient=p.patient, label=p.label, params=params, encoder=enc, truth=p.truth
                )
            )
        except ImageInputError as exc:
            counts.append(0)
            failed.append(_failure(p, exc))
            logger.error("%s", failed[-1])
    total_s = max(time.perf_counter() - t0, 1e-9)
    n_crops = sum(counts)
    logger.info(
        "job: %d of %d patient(s), %d crops with %s in %.1f s (encoder load %.1f s): %.1f crops/s including the load",
        len(patients) - len(failed),
        len(patients),
        n_crops,
        enc.name,
        total_s,
        load_s,
        n_crops / total_s,
    )
    if failed:
        raise ImageInputError(
            f"{len(failed)} of {len(patients)} patient(s) could not be embedded:\n" + "\n".join(failed)
        )
    return counts
