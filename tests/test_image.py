"""Blood-smear images: simulator, image reading, encoders (DinoBloom, timm, morphology), bags."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image
from sklearn.neighbors import KNeighborsClassifier

from recipe_mil.embed.image import (
    DINOBLOOM_MODELS,
    EncoderWeightsError,
    ImageEmbedParams,
    ImageInputError,
    create_dinobloom_model,
    embed_image_folder,
    encoder_dim,
    load_dinobloom_weights,
    load_encoder,
    morphology_feature_names,
    morphology_features,
    read_image,
    to_rgb8,
    write_image_bag,
)
from recipe_mil.io.bags import BagFileError, read_bag
from recipe_mil.simulate.image import (
    CELL_TYPES,
    TRUTH_JSON,
    ImageSimParams,
    class_mean_proportions,
    cohort_design,
    external_image_params,
    read_image_truth,
    render_cell,
    simulate_image_cohort,
    simulate_patient_images,
)

TINY = ImageSimParams(
    classes=("healthy", "aml"),
    n_patients_per_class=2,
    crops_per_patient_mean=8,
    crops_per_patient_sd=3,
    min_crops_per_patient=5,
    max_crops_per_patient=12,
)

# DINOv2 / DinoBloom architecture: width, depth, MLP hidden width, SwiGLU (ViT-g)
ARCH = {
    "dinobloom-s": (384, 12, 1536, False),
    "dinobloom-b": (768, 12, 3072, False),
    "dinobloom-l": (1024, 24, 4096, False),
    "dinobloom-g": (1536, 40, 4096, True),
}


def dinov2_state_dict(name: str, *, device: str = "cpu", n_tokens: int = 257, seed: int = 0) -> dict:
    """A DINOv2 hub state dict (its own key names, independent of timm's) with random weights."""
    dim, depth, hidden, swiglu = ARCH[name]
    gen = torch.Generator().manual_seed(seed)

    def t(*shape, std=0.02, fill=None):
        if device == "meta":
            return torch.empty(*shape, device="meta")
        if fill is not None:
            return torch.full(shape, float(fill))
        return torch.randn(*shape, generator=gen) * std

    sd = {
        "cls_token": t(1, 1, dim),
        "pos_embed": t(1, n_tokens, dim),
        "mask_token": t(1, dim),
        "patch_embed.proj.weight": t(dim, 3, 14, 14),
        "patch_embed.proj.bias": t(dim),
        "norm.weight": t(dim, fill=1.0),
        "norm.bias": t(dim),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        sd |= {
            b + "norm1.weight": t(dim, fill=1.0),
            b + "norm1.bias": t(dim),
            b + "attn.qkv.weight": t(3 * dim, dim),
            b + "attn.qkv.bias": t(3 * dim),
            b + "attn.proj.weight": t(dim, dim),
            b + "attn.proj.bias": t(dim),
            b + "ls1.gamma": t(dim, fill=0.1),
            b + "norm2.weight": t(dim, fill=1.0),
            b + "norm2.bias": t(dim),
            b + "ls2.gamma": t(dim, fill=0.1),
        }
        if swiglu:
            sd |= {
                b + "mlp.w12.weight": t(2 * hidden, dim),
                b + "mlp.w12.bias": t(2 * hidden),
                b + "mlp.w3.weight": t(dim, hidden),
                b + "mlp.w3.bias": t(dim),
            }
        else:
            sd |= {
                b + "mlp.fc1.weight": t(hidden, dim),
                b + "mlp.fc1.bias": t(hidden),
                b + "mlp.fc2.weight": t(dim, hidden),
                b + "mlp.fc2.bias": t(dim),
            }
    return sd


def dinobloom_checkpoint(name: str, **kwargs) -> dict:
    """The official DinoBloom layout: teacher weights with a ``backbone.`` prefix plus the DINO/iBOT heads."""
    device = kwargs.get("device", "cpu")
    teacher = {f"backbone.{k}": v for k, v in dinov2_state_dict(name, **kwargs).items()}
    teacher["dino_head.mlp.0.weight"] = torch.zeros(16, ARCH[name][0], device=device)
    teacher["dino_head.last_layer.weight_g"] = torch.ones(8, 1, device=device)
    teacher["ibot_head.mlp.0.bias"] = torch.zeros(16, device=device)
    return {"teacher": teacher}


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = [render_cell(ct, rng) for ct in CELL_TYPES]
    out.append(render_cell("monocyte", rng, image_size=120)[:, 10:110])  # not square
    return out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[pd.DataFrame, object]:
    out = tmp_path_factory.mktemp("sim")
    return simulate_image_cohort(TINY, out), out


# --------------------------------------------------------------------------- simulator


def test_simulated_cohort_layout_and_truth(cohort):
    sheet, out = cohort
    design = cohort_design(TINY)
    assert list(sheet.columns) == ["patient", "label", "path", "cohort"]
    assert list(sheet["patient"]) == list(design["patient"]) == ["P000", "P001", "P002", "P003"]
    assert list(sheet["label"]) == ["healthy", "healthy", "aml", "aml"]
    truth = read_image_truth(out)
    assert list(truth.columns) == ["patient", "label", "cohort", "instance_id", "cell_type", "state"]
    assert set(truth["cell_type"]) <= {*CELL_TYPES, "aml_only"}  # the built-in disease-only type of aml
    assert set(truth.loc[truth["label"] == "healthy", "cell_type"]) <= set(CELL_TYPES)
    assert set(truth["state"]) <= {"baseline", "shifted", "disease_only"}
    meta = json.loads((out / TRUTH_JSON).read_text())
    sizes = []
    for patient, folder in zip(sheet["patient"], sheet["path"], strict=True):
        files = sorted(p.name for p in (out / patient).iterdir())
        assert folder == str(out / patient)
        assert files == sorted(truth.loc[truth["patient"] == patient, "instance_id"])
        assert TINY.min_crops_per_patient <= len(files) <= TINY.max_crops_per_patient
        assert meta["patient_n_crops"][patient] == len(files)
        assert np.isclose(sum(meta["patient_proportions"][patient]), 1.0)
        sizes.append(len(files))
        img = np.asarray(Image.open(out / patient / files[0]))
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    assert len(set(sizes)) > 1  # bag sizes vary
    assert not list(out.rglob("*.tmp"))  # atomic writes leave nothing behind


def test_simulator_is_deterministic_per_patient():
    a, b = simulate_patient_images(TINY, "P001", "aml"), simulate_patient_images(TINY, "P001", "aml")
    c = simulate_patient_images(TINY, "P002", "aml")
    assert a.cell_types == b.cell_types and a.states == b.states and np.array_equal(a.proportions, b.proportions)
    assert a.effect == b.effect
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))
    assert len(c.images) != len(a.images) or not np.array_equal(a.images[0], c.images[0])


def test_class_proportions_and_external_cohort():
    means = class_mean_proportions(ImageSimParams(classes=("healthy", "aml", "eosinophilia", "low_blast")))
    blast, eos = CELL_TYPES.index("myeloblast"), CELL_TYPES.index("eosinophil")
    assert means["aml"][blast] > 5 * means["healthy"][blast]
    assert means["eosinophilia"][eos] > 3 * means["healthy"][eos]
    assert means["healthy"][blast] < means["low_blast"][blast] < means["aml"][blast]
    with pytest.raises(ValueError, match="no built-in proportions"):
        class_mean_proportions(ImageSimParams(classes=("healthy", "mystery")))
    with pytest.raises(ValueError, match="positive finite"):
        class_mean_proportions(ImageSimParams(classes=("x",), class_proportions={"x": [1, 0, 1, 1, 1]}))
    ext = external_image_params(TINY)
    assert ext.cohort == "external" and ext.classes == ("healthy",) and ext.stain_shift > 0
    assert list(cohort_design(ext)["patient"])[:2] == ["E000", "E001"]
    # the stain shift changes colour: stronger red-channel absorbance, yellower background
    rng0, rng1 = np.random.default_rng(1), np.random.default_rng(1)
    plain = render_cell("lymphocyte", rng0, noise_sd=0).astype(float)
    shifted = render_cell("lymphocyte", rng1, noise_sd=0, stain_shift=1.0).astype(float)
    assert shifted[..., 2].mean() < plain[..., 2].mean()
    assert shifted[..., 0].min() < plain[..., 0].min()


# --------------------------------------------------------------------------- reading images


def test_to_rgb8_conversions():
    grey16 = np.array([[0, 65535], [32768, 65535]], dtype=np.uint16)
    out = to_rgb8(grey16)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 1].tolist() == [255, 255, 255] and out[1, 0, 0] == 128
    twelve = np.full((4, 4, 3), 4095, dtype=np.uint16)  # 12-bit data in a 16-bit container
    assert (to_rgb8(twelve) == 255).all()
    rgba = np.zeros((3, 3, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # one opaque red pixel, the rest transparent
    out = to_rgb8(rgba)
    assert out[0, 0].tolist() == [200, 0, 0] and out[1, 1].tolist() == [255, 255, 255]
    chw = np.zeros((3, 8, 9), dtype=np.uint8)
    chw[1] = 77
    assert to_rgb8(chw).shape == (8, 9, 3) and (to_rgb8(chw)[..., 1] == 77).all()
    assert (to_rgb8(np.full((5, 5), 0.5, dtype=np.float32)) == 128).all()
    with pytest.raises(ValueError, match="not a 2-d"):
        to_rgb8(np.zeros((5, 6, 7)))


def write_mixed_folder(folder, crops) -> dict[str, str]:
    """A folder of crops in every supported flavour plus broken and ignored files."""
    folder.mkdir()
    rgb = crops[0]
    Image.fromarray(rgb).save(folder / "a_rgb.png")
    Image.fromarray(rgb).save(folder / "b_photo.jpg", quality=90)
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])).save(folder / "c_rgba.png")
    Image.fromarray(rgb).convert("L").save(folder / "d_grey.png")
    tifffile.imwrite(folder / "e_rgb16.tif", rgb.astype(np.uint16) * 257)
    tifffile.imwrite(folder / "f_grey12.tiff", (rgb[..., 1].astype(np.uint16) * 16))
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "g_grey16.png")
    (folder / "h_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    jpeg = (folder / "b_photo.jpg").read_bytes()
    (folder / "i_truncated.JPG").write_bytes(jpeg[: len(jpeg) // 3])
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"junk")
    return {"bad": ["h_corrupt.png", "i_truncated.JPG"]}


def test_bad_images_are_skipped_and_counted_or_fail_in_strict_mode(tmp_path, crops, caplog):
    folder = tmp_path / "P1"
    info = write_mixed_folder(folder, crops)
    params = ImageEmbedParams(batch_size=3, log_every=1)
    with caplog.at_level(logging.INFO, logger="recipe_mil.embed.image"):
        feats, ids = embed_image_folder(folder, params)
    good = ["a_rgb.png", "b_photo.jpg", "c_rgba.png", "d_grey.png", "e_rgb16.tif", "f_grey12.tiff", "g_grey16.png"]
    assert list(ids) == good
    assert feats.shape == (7, len(morphology_feature_names())) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    text = caplog.text
    assert all("skipping unreadable image" in text and name in text for name in info["bad"])
    assert "skipped 2 unreadable file(s)" in text
    assert "crops/s" in text  # progress lines
    # 8-bit RGB, opaque RGBA and 16-bit RGB TIFF give the same pixels, hence the same features
    assert np.allclose(feats[0], feats[2]) and np.allclose(feats[0], feats[4])
    assert np.array_equal(read_image(folder / "e_rgb16.tif"), crops[0])
    assert read_image(folder / "f_grey12.tiff").shape == crops[0].shape
    with pytest.raises(ImageInputError, match="h_corrupt.png"):
        embed_image_folder(folder, ImageEmbedParams(strict=True))


def test_empty_or_unreadable_folder_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ImageInputError, match="empty.*no image files"):
        embed_image_folder(empty, ImageEmbedParams())
    with pytest.raises(BagFileError, match="does not exist"):
        embed_image_folder(tmp_path / "missing", ImageEmbedParams())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"garbage")
    with pytest.raises(ImageInputError, match="broken: none of the 1 image files"):
        embed_image_folder(broken, ImageEmbedParams())


# --------------------------------------------------------------------------- morphology


def test_morphology_separates_cell_types():
    """1-NN on morphology features, trained on 3 patients, tested on 3 others and on 3 stain-shifted ones.

    Measured (seed 0, 40 crops per patient): 0.97-1.0 on other patients, 1.0 under the stain shift;
    asserted >= 0.9 for both.
    """
    even = ImageSimParams(
        classes=("even",), class_proportions={"even": [1] * 5}, crops_per_patient_mean=40, crops_per_patient_sd=0
    )

    def data(params, patients):
        x, y = [], []
        for p in patients:
            crops = simulate_patient_images(params, p, "even")
            x += [morphology_features(im) for im in crops.images]
            y += crops.cell_types
        return np.stack(x), np.array(y)

    x_train, y_train = data(even, ["A0", "A1", "A2"])
    x_test, y_test = data(even, ["B0", "B1", "B2"])
    x_ext, y_ext = data(external_image_params(even, classes=("even",)), ["E0", "E1", "E2"])
    knn = KNeighborsClassifier(n_neighbors=1).fit(x_train, y_train)
    acc = float((knn.predict(x_test) == y_test).mean())
    acc_ext = float((knn.predict(x_ext) == y_ext).mean())
    print(f"morphology 1-NN accuracy: other patients {acc:.3f}, stain-shifted cohort {acc_ext:.3f}")
    assert set(y_test) == set(CELL_TYPES)
    assert acc >= 0.9
    assert acc_ext >= 0.9


def test_morphology_feature_values():
    names = morphology_feature_names()
    rng = np.random.default_rng(3)
    med = {ct: np.median([morphology_features(render_cell(ct, rng)) for _ in range(7)], axis=0) for ct in CELL_TYPES}

    def f(ct, name):
        return med[ct][names.index(name)]

    lobes = {ct: round(f(ct, "nucleus_lobes") * 0.9 + 1.7) for ct in CELL_TYPES}  # undo the fixed scaling
    assert lobes == {"neutrophil": 3, "lymphocyte": 1, "monocyte": 1, "myeloblast": 1, "eosinophil": 2}
    assert f("myeloblast", "nc_ratio") > f("monocyte", "nc_ratio")
    assert f("lymphocyte", "nc_ratio") > f("neutrophil", "nc_ratio")
    assert f("monocyte", "cell_log_area") > f("neutrophil", "cell_log_area") > f("lymphocyte", "cell_log_area")
    assert max(CELL_TYPES, key=lambda ct: f(ct, "cyto_granularity")) == "eosinophil"
    assert max(CELL_TYPES, key=lambda ct: f(ct, "nucleus_light_spots")) in ("myeloblast", "monocyte")
    blank = morphology_features(np.full((64, 64, 3), 240, np.uint8))
    assert blank.shape == (len(names),) and not blank.any()


def test_write_image_bag_and_workers(cohort, tmp_path, caplog):
    sheet, _ = cohort
    row = sheet.iloc[2]
    params = ImageEmbedParams(batch_size=4, num_workers=1)
    n = write_image_bag(row["path"], tmp_path / "bag.h5", patient=row["patient"], label=row["label"], params=params)
    bag = read_bag(tmp_path / "bag.h5")
    assert bag.n_instances == n and bag.features.shape[1] == encoder_dim("morphology")
    assert (bag.patient, bag.label, bag.encoder) == (row["patient"], row["label"], "morphology")
    assert list(bag.instance_ids) == sorted(p.name for p in Path(row["path"]).iterdir())
    serial, _ = embed_image_folder(row["path"], ImageEmbedParams(num_workers=0))
    assert np.allclose(serial, bag.features)


# --------------------------------------------------------------------------- DinoBloom and timm


@pytest.mark.parametrize("name", list(DINOBLOOM_MODELS))
def test_dinobloom_layout_loads_strictly_for_every_size(name):
    """Construct-and-load on the meta device (shapes and key names only, no memory): S, B, L and G."""
    with torch.device("meta"):
        model = create_dinobloom_model(name)
    assert tuple(model.pos_embed.shape) == (1, 257, ARCH[name][0])
    load_dinobloom_weights(model, dinobloom_checkpoint(name, device="meta"), name=name)
    out = model(torch.empty(2, 3, 224, 224, device="meta"))
    assert tuple(out.shape) == (2, encoder_dim(name)) == (2, DINOBLOOM_MODELS[name][1])


def test_dinobloom_mismatches_are_reported():
    with torch.device("meta"):
        model = create_dinobloom_model("dinobloom-s")
    with pytest.raises(EncoderWeightsError, match=r"1370 tokens.*image_size=518"):
        load_dinobloom_weights(model, dinobloom_checkpoint("dinobloom-s", device="meta", n_tokens=1370))
    with pytest.raises(EncoderWeightsError, match="missing|another shape"):
        load_dinobloom_weights(model, dinobloom_checkpoint("dinobloom-b", device="meta"))
    partial = dinobloom_checkpoint("dinobloom-s", device="meta")
    del partial["teacher"]["backbone.blocks.3.ls1.gamma"]
    with pytest.raises(EncoderWeightsError, match=r"1 missing .*blocks\.3\.ls1\.gamma"):
        load_dinobloom_weights(model, partial)
    with pytest.raises(ValueError, match="multiple of 14"):
        create_dinobloom_model("dinobloom-s", image_size=100)


def test_dinobloom_s_checkpoint_file_embeds(tmp_path, crops):
    ckpt = dinobloom_checkpoint("dinobloom-s", seed=1)
    torch.save(ckpt, tmp_path / "DinoBloom-S.pth")
    params = ImageEmbedParams(encoder="dinobloom-s", weights=str(tmp_path / "DinoBloom-S.pth"), batch_size=4)
    enc = load_encoder(params)
    assert enc.device.type == "cpu" and enc.dim == 384
    qkv = ckpt["teacher"]["backbone.blocks.0.attn.qkv.weight"]
    assert torch.equal(enc.model.blocks[0].attn.qkv.weight, qkv)
    feats = enc(crops[:4])  # ViT-S/14 at 224 px: a few crops per second on 2 CPU cores
    assert feats.shape == (4, 384) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[1])
    # a plain (hub-style) state dict and a wrapped timm state dict give the same network
    torch.save(dinov2_state_dict("dinobloom-s", seed=1), tmp_path / "plain.pth")
    plain = load_encoder(ImageEmbedParams(encoder="dinobloom-s", weights=str(tmp_path / "plain.pth")))
    assert np.allclose(plain(crops[:2]), feats[:2], atol=1e-5)
    torch.save({"state_dict": enc.model.state_dict()}, tmp_path / "timm.pt")
    again = load_encoder(ImageEmbedParams(encoder="dinobloom-s", weights=str(tmp_path / "timm.pt")))
    assert np.allclose(again(crops[:1]), feats[:1], atol=1e-5)
    # a folder goes through the DataLoader (varying sizes: padded and resized) into a bag
    folder = tmp_path / "P9"
    folder.mkdir()
    Image.fromarray(crops[0]).save(folder / "c0.png")
    Image.fromarray(crops[-1]).save(folder / "c1.png")  # 120 x 100 px
    write_image_bag(folder, tmp_path / "P9.h5", patient="P9", label="aml", params=params, encoder=enc)
    bag = read_bag(tmp_path / "P9.h5")
    assert bag.encoder == "dinobloom-s" and bag.features.shape == (2, 384)
    assert list(bag.instance_ids) == ["c0.png", "c1.png"]
    assert np.allclose(bag.features[0], feats[0], atol=1e-5)
    assert np.allclose(bag.features[1], enc([crops[-1]])[0], atol=1e-5)


def test_network_encoders_need_a_local_weights_file(tmp_path):
    with pytest.raises(EncoderWeightsError, match="needs ImageEmbedParams.weights"):
        load_encoder(ImageEmbedParams(encoder="dinobloom-s"))
    with pytest.raises(EncoderWeightsError, match="does not exist"):
        load_encoder(ImageEmbedParams(encoder="timm:resnet18", weights=str(tmp_path / "nope.pth")))
    with pytest.raises(ValueError, match="unknown image encoder"):
        ImageEmbedParams(encoder="dinobloom-xl")


def test_timm_backbone_from_local_file(tmp_path, crops):
    import timm

    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)  # with its classifier
    torch.save({"model": source.state_dict()}, tmp_path / "resnet18.pth")
    enc = load_encoder(
        ImageEmbedParams(encoder="timm:resnet18", weights=str(tmp_path / "resnet18.pth"), image_size=112)
    )
    assert enc.dim == encoder_dim("timm:resnet18") == 512
    feats = enc(crops[:3])
    assert feats.shape == (3, 512) and np.isfinite(feats).all()
    source.reset_classifier(0)
    x = enc._transform()(crops[0])[None]
    with torch.no_grad():
        assert np.allclose(source.eval()(x).numpy()[0], feats[0], atol=1e-4)
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(EncoderWeightsError, match="do not match"):
        load_encoder(ImageEmbedParams(encoder="timm:resnet18", weights=str(tmp_path / "wrong.pth")))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dinobloom-b", "dinobloom-l", "dinobloom-g"])
def test_dinobloom_large_checkpoint_files_embed(tmp_path, crops, name):
    torch.save(dinobloom_checkpoint(name), tmp_path / "w.pth")
    enc = load_encoder(ImageEmbedParams(encoder=name, weights=str(tmp_path / "w.pth"), batch_size=2))
    feats = enc(crops[:2])
    assert feats.shape == (2, DINOBLOOM_MODELS[name][1]) and np.isfinite(feats).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dinobloom_on_gpu_matches_cpu(tmp_path, crops):
    torch.save(dinobloom_checkpoint("dinobloom-s", seed=2), tmp_path / "w.pth")
    cpu = load_encoder(ImageEmbedParams(encoder="dinobloom-s", weights=str(tmp_path / "w.pth"), device="cpu"))
    gpu = load_encoder(ImageEmbedParams(encoder="dinobloom-s", weights=str(tmp_path / "w.pth"), device="cuda"))
    a, b = cpu(crops), gpu(crops)  # float32 vs bf16 autocast
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert b.dtype == np.float32 and cos.min() > 0.99
