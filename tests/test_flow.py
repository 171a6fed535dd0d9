import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from recipe_mil.embed.flow import (
    FlowEmbedParams,
    FlowFileError,
    channel_mapping,
    embed_flow_events,
    embed_flow_file,
    file_spillover,
    fit_flow_pca,
    read_fcs,
    read_fcs_header,
    resolve_panel,
    write_flow_bag,
)
from recipe_mil.io.bags import read_bag
from recipe_mil.simulate.flow import (
    FLOW_PANEL,
    MARKERS,
    POPULATIONS,
    FlowSimParams,
    class_mean_proportions,
    cohort_design,
    event_populations,
    external_flow_params,
    read_flow_truth,
    simulate_flow_cohort,
)

# --------------------------------------------------------------------------------------------
# a minimal FCS writer for the flavours flowio cannot write (2.0, 3.0, integer, big-endian, $SPILL)
# --------------------------------------------------------------------------------------------


def fcs_bytes(
    data,
    pnn,
    pns=None,
    *,
    version="3.1",
    datatype="F",
    bits=None,
    pnr=None,
    byteord="1,2,3,4",
    keywords=None,
    nextdata="0",
):
    data = np.asarray(data)
    n, p = data.shape
    bits = bits or {"I": 16, "F": 32, "D": 64}[datatype]
    pnr = pnr if pnr is not None else [262144] * p
    endian = "<" if byteord.startswith("1") else ">"
    kind = "u" if datatype == "I" else "f"
    payload = data.astype(f"{endian}{kind}{bits // 8}").tobytes()
    kw = {"$BYTEORD": byteord, "$DATATYPE": datatype, "$MODE": "L", "$NEXTDATA": nextdata, "$PAR": p, "$TOT": n}
    for i in range(p):
        kw |= {f"$P{i + 1}N": pnn[i], f"$P{i + 1}B": bits, f"$P{i + 1}E": "0,0", f"$P{i + 1}R": int(pnr[i])}
        if pns is not None and pns[i]:
            kw[f"$P{i + 1}S"] = pns[i]
    kw |= keywords or {}
    text_start, begin, text = 256, 0, b""
    for _ in range(6):
        items = dict(kw)
        if version != "2.0":
            items |= {"$BEGINANALYSIS": 0, "$ENDANALYSIS": 0, "$BEGINSTEXT": 0, "$ENDSTEXT": 0}
            items |= {"$BEGINDATA": begin, "$ENDDATA": begin + len(payload) - 1}
        text = ("/" + "".join(f"{k}/{str(v).replace('/', '//')}/" for k, v in items.items())).encode()
        if text_start + len(text) == begin:
            break
        begin = text_start + len(text)
    offsets = (text_start, begin - 1, begin, begin + len(payload) - 1, 0, 0)
    header = (f"FCS{version}    " + "".join(f"{v:>8}" for v in offsets)).encode().ljust(text_start)
    return header + text + payload


def write_fcs(path, data, pnn, pns=None, **kw):
    Path(path).write_bytes(fcs_bytes(data, pnn, pns, **kw))
    return Path(path)


def spill_text(names, matrix):
    return ",".join([str(len(names)), *names, *(f"{v:.10g}" for v in np.asarray(matrix).ravel())])


def logicle_inverse_by_hand(y, t, w_, m, a):
    """The biexponential of Moore & Parks (2012): logicle is its inverse."""
    w, x2 = w_ / (m + a), a / (m + a)
    x1, x0, b = x2 + w, x2 + 2 * w, (m + a) * np.log(10)
    d = brentq(lambda d: 2 * (np.log(d) - np.log(b)) + w * (b + d), 1e-9, b) if w > 0 else b
    ca = np.exp(x0 * (b + d))
    mfa = np.exp(b * x1) - ca / np.exp(d * x1)
    a_ = t / ((np.exp(b) - mfa) - ca / np.exp(d))
    c, f = ca * a_, -mfa * a_

    def s(v):
        return a_ * np.exp(b * v) - c * np.exp(-d * v) + f

    return np.where(y >= x1, s(y), -s(2 * x1 - y))


PNN = ["FSC-A", "SSC-A", "FITC-A", "PE-A", "APC-A", "Time"]
PNS = ["", "", "CD3", "CD19", "CD33", ""]
SPILL = np.array([[1.0, 0.2, 0.01], [0.05, 1.0, 0.1], [0.0, 0.03, 1.0]])


def _events(n=400, seed=0):
    rng = np.random.default_rng(seed)
    true = np.column_stack(
        [
            rng.uniform(2e4, 2e5, n),
            rng.uniform(1e4, 1e5, n),
            10 ** rng.uniform(1, 4.5, (n, 3)) - 50,
            np.arange(n, dtype=float),
        ]
    )
    observed = true.copy()
    observed[:, 2:5] = true[:, 2:5] @ SPILL
    return true, observed


# --------------------------------------------------------------------------------------------
# reading, compensation, transform
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "datatype", "byteord", "spill_key"),
    [
        ("2.0", "I", "1,2", None),
        ("3.0", "F", "4,3,2,1", "SPILL"),
        ("3.1", "F", "1,2,3,4", "$SPILL"),
        ("3.1", "D", "1,2,3,4", "$SPILLOVER"),
    ],
)
def test_fcs_flavours_are_read_exactly(tmp_path, version, datatype, byteord, spill_key):
    _, observed = _events()
    if datatype == "I":
        observed = np.clip(np.round(observed / 256), 0, 1023)  # 10-bit integer data
    kw = {"keywords": {spill_key: spill_text(PNN[2:5], SPILL)}} if spill_key else {}
    pnr = [1024] * 6 if datatype == "I" else None
    pns = None if version == "2.0" else PNS  # FCS 2.0 flavour without any $PnS
    path = write_fcs(
        tmp_path / "f.fcs", observed, PNN, pns, version=version, datatype=datatype, byteord=byteord, pnr=pnr, **kw
    )
    header, events = read_fcs(path)
    assert header.version == version
    assert header.pnn == PNN
    assert header.pns == (PNS if pns else [""] * 6)
    assert header.kinds == ["scatter", "scatter", "fluorescence", "fluorescence", "fluorescence", "time"]
    expected = observed.astype(np.float32) if datatype == "F" else observed
    np.testing.assert_array_equal(events, expected.astype(np.float64))
    spill = file_spillover(header)
    if spill_key is None:
        assert spill is None
    else:
        names, matrix, keyword = spill
        assert names == PNN[2:5] and keyword == ("$SPILLOVER" if spill_key == "$SPILLOVER" else "$SPILL")
        np.testing.assert_allclose(matrix, SPILL)


@pytest.mark.parametrize("transform", ["logicle", "asinh"])
def test_compensation_and_transform_match_hand_computation(tmp_path, transform):
    true, observed = _events(n=300)
    path = write_fcs(tmp_path / "s.fcs", observed, PNN, PNS, keywords={"$SPILL": spill_text(PNN[2:5], SPILL)})
    stored = observed.astype(np.float32).astype(np.float64)
    comp_by_hand = stored[:, 2:5] @ np.linalg.inv(SPILL)
    np.testing.assert_allclose(comp_by_hand, true[:, 2:5], rtol=1e-5, atol=0.05)  # float32 storage

    features = ["FSC-A", "SSC-A", "CD3", "CD19", "CD33"]
    params = FlowEmbedParams(transform=transform, max_events=None, standardize="none", cofactor=150.0)
    x, ids = embed_flow_file(path, params, features=features)
    np.testing.assert_array_equal(ids, np.arange(300))
    np.testing.assert_allclose(x[:, 0], stored[:, 0] / 262144, rtol=1e-6)  # scatter: linear / $PnR
    np.testing.assert_allclose(x[:, 1], stored[:, 1] / 262144, rtol=1e-6)
    if transform == "asinh":
        np.testing.assert_allclose(x[:, 2:], np.arcsinh(comp_by_hand / 150.0), rtol=1e-5, atol=1e-6)
    else:  # logicle T = $PnR = 262144, W = 0.5, M = 4.5, A = 0: its inverse gives back the compensated data
        back = logicle_inverse_by_hand(x[:, 2:].astype(np.float64), 262144, 0.5, 4.5, 0.0)
        np.testing.assert_allclose(back, comp_by_hand, rtol=2e-5, atol=0.05)  # float32 features

    # the fixed scaling maps the transformed 0 to -2 and the top of scale to +2
    fixed, _ = embed_flow_file(path, FlowEmbedParams(transform=transform, max_events=None), features=features)
    np.testing.assert_allclose(fixed[:, 0], (stored[:, 0] / 262144 - 0.5) / 0.25, rtol=1e-5, atol=1e-5)
    if transform == "asinh":
        h = np.arcsinh(262144 / 150.0)
        np.testing.assert_allclose(fixed[:, 2:], (x[:, 2:] - h / 2) / (h / 4), rtol=1e-5, atol=1e-5)

    # the same matrix from a CSV file gives the same values; no compensation does not
    csv = tmp_path / "spill.csv"
    pd.DataFrame(SPILL, columns=PNN[2:5]).to_csv(csv, index=False)
    from_csv, _ = embed_flow_file(path, replace(params, compensation=str(csv)), features=features)
    np.testing.assert_allclose(from_csv, x, rtol=1e-6)
    raw, _ = embed_flow_file(path, replace(params, compensation="none"), features=features)
    assert not np.allclose(raw[:, 2:], x[:, 2:], atol=1e-3)
    np.testing.assert_allclose(raw[:, :2], x[:, :2])  # scatter is never compensated


def test_multi_data_set_file_reads_the_fcs3_data_set(tmp_path):
    """Beckman .lmd files: an FCS 2.0 10-bit data set, then an FCS 3.0 float data set."""
    _, observed = _events(n=50)
    first = fcs_bytes(
        np.clip(observed / 256, 0, 1023), PNN, PNS, version="2.0", datatype="I", pnr=[1024] * 6, nextdata="0" * 8
    )
    first = fcs_bytes(
        np.clip(observed / 256, 0, 1023),
        PNN,
        PNS,
        version="2.0",
        datatype="I",
        pnr=[1024] * 6,
        nextdata=f"{len(first):08d}",
    )
    second = fcs_bytes(observed, PNN, PNS, version="3.0")
    path = tmp_path / "beckman.lmd"
    path.write_bytes(first + second)
    header, events = read_fcs(path)
    assert header.version == "3.0" and header.n_data_sets == 2 and header.data_set_offset == len(first)
    np.testing.assert_array_equal(events, observed.astype(np.float32))


# --------------------------------------------------------------------------------------------
# panel harmonisation
# --------------------------------------------------------------------------------------------


PANEL = [
    {"marker": "FSC-A", "aliases": ["FS INT"]},
    {"marker": "CD45", "aliases": ["CD45-V500", "V500-A"]},
    {"marker": "CD117", "aliases": ["cKit"]},
    "HLA-DR",
]


def test_panel_matching_by_alias_and_decorations(tmp_path, caplog):
    data = np.random.default_rng(0).uniform(0, 1000, (100, 6))
    bd = write_fcs(
        tmp_path / "bd.fcs",
        data,
        ["FSC-A", "SSC-A", "V500-A", "V500-H", "PE-Cy7-A", "BV421-A"],
        ["", "", "CD45", "CD45", "CD117", "HLA-DR"],
    )
    beckman = write_fcs(  # renamed channels, other spellings, FlowJo-style decoration, no $PnS on scatter
        tmp_path / "beckman.fcs",
        data,
        ["FS INT", "SS INT", "FL1-A", "FL2-A", "FL3-A", "TIME"],
        ["", "", "cKit", "HLA DR", "CD45 :: KrO-A", ""],
        version="3.0",
    )
    no_pns = write_fcs(tmp_path / "nopns.fcs", data, ["FSC-A", "SSC-A", "V500-A", "cKit", "HLA-DR-A", "Time"])
    paths = [bd, beckman, no_pns]
    features = resolve_panel(paths, PANEL)
    assert features == ["FSC-A", "CD45", "CD117", "HLA-DR"]
    assert channel_mapping(bd, features, panel=PANEL) == {"FSC-A": 0, "CD45": 2, "CD117": 4, "HLA-DR": 5}
    assert channel_mapping(beckman, features, panel=PANEL) == {"FSC-A": 0, "CD45": 4, "CD117": 2, "HLA-DR": 3}
    assert channel_mapping(no_pns, features, panel=PANEL) == {"FSC-A": 0, "CD45": 2, "CD117": 3, "HLA-DR": 4}
    x, _ = embed_flow_file(
        beckman, FlowEmbedParams(panel=PANEL, max_events=None, compensation="none"), features=features
    )
    assert x.shape == (100, 4)

    # without a panel: channels common to all files by $PnS (else $PnN), never Time, no -H duplicate
    with caplog.at_level(logging.INFO, logger="recipe_mil.embed.flow"):
        auto = resolve_panel([bd, bd])
    assert auto == ["FSC-A", "SSC-A", "CD45", "CD117", "HLA-DR"]
    assert "no panel given" in caplog.text


def test_auto_panel_without_common_channels_and_time_never_a_feature(tmp_path):
    data = np.random.default_rng(0).uniform(0, 1000, (50, 3))
    a = write_fcs(tmp_path / "a.fcs", data, ["FSC-A", "FITC-A", "Time"], ["", "CD3", ""])
    b = write_fcs(tmp_path / "b.fcs", data, ["FS INT", "FL1-A", "TIME"], ["", "CD19", ""])
    with pytest.raises(FlowFileError, match="no scatter or fluorescence channel is common"):
        resolve_panel([a, b])
    assert resolve_panel([a, a]) == ["FSC-A", "CD3"]
    with pytest.raises(FlowFileError, match="Time is never a feature"):
        channel_mapping(a, ["Time"])


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def _good_bytes():
    _, observed = _events(n=100)
    return fcs_bytes(observed, PNN, PNS)


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("empty.fcs", lambda: b"", r"empty file \(0 bytes\)"),
        ("zero.fcs", lambda: fcs_bytes(np.zeros((0, 6)), PNN, PNS), r"empty file: 0 events"),
        ("cut.fcs", lambda: _good_bytes()[:-700], r"truncated file: the DATA segment should end"),
        ("cut_text.fcs", lambda: _good_bytes()[:300], r"truncated file: the TEXT segment"),
        ("cut_header.fcs", lambda: _good_bytes()[:30], r"truncated file: the FCS HEADER"),
        ("junk.fcs", lambda: b"PK\x03\x04" + b"x" * 500, r"not an FCS file"),
        (
            "lies.fcs",
            lambda: _good_bytes().replace(b"/$TOT/100/", b"/$TOT/120/"),
            r"TEXT segment does not match the DATA segment: \$TOT=120",
        ),
        (
            "lies_par.fcs",
            lambda: _good_bytes().replace(b"/$PAR/6/", b"/$PAR/5/"),
            r"TEXT segment does not match the DATA segment",
        ),
    ],
)
def test_bad_files_name_the_file_and_the_reason(tmp_path, name, make, reason):
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(FlowFileError, match=reason) as err:
        embed_flow_file(path, FlowEmbedParams(), features=["CD3"])
    assert str(err.value).startswith(str(path))
    assert isinstance(err.value, ValueError)


def test_writer_quirks_are_tolerated(tmp_path, caplog):
    """$ENDDATA one byte too far (a common writer bug), HEADER data offsets left at 0."""
    _, observed = _events(n=100)
    good = _good_bytes()
    end = int(re.search(rb"/\$ENDDATA/(\d+)/", good).group(1))
    off_by_one = good.replace(f"/$ENDDATA/{end}/".encode(), f"/$ENDDATA/{end + 1}/".encode())
    off_by_one = off_by_one[:34] + f"{end + 1:>8}".encode() + off_by_one[42:]  # file ends at $ENDDATA - 1
    zero_header = good[:26] + f"{0:>8}{0:>8}".encode() + good[42:]
    for name, content in (("obo.fcs", off_by_one), ("zero.fcs", zero_header)):
        path = tmp_path / name
        path.write_bytes(content)
        with caplog.at_level(logging.WARNING, logger="recipe_mil.embed.flow"):
            _, events = read_fcs(path)
        np.testing.assert_array_equal(events, observed.astype(np.float32))
    assert "off by one" in caplog.text


def test_missing_marker_and_missing_file(tmp_path):
    path = tmp_path / "ok.fcs"
    path.write_bytes(_good_bytes())
    with pytest.raises(FlowFileError, match=r"missing panel marker 'CD34'") as err:
        embed_flow_file(path, FlowEmbedParams(), features=["CD3", "CD34"])
    assert str(path) in str(err.value)
    with pytest.raises(FlowFileError, match=r"missing panel marker 'CD34'"):
        resolve_panel([path], ["CD3", {"marker": "CD34", "aliases": ["PerCP-Cy5.5-A"]}])
    with pytest.raises(FlowFileError, match="does not exist"):
        read_fcs_header(tmp_path / "nope.fcs")


# --------------------------------------------------------------------------------------------
# event QC and subsampling
# --------------------------------------------------------------------------------------------


def test_qc_drops_saturated_and_non_finite_events_and_keeps_original_ids(tmp_path):
    _, observed = _events(n=200)
    observed[5, 2] = np.nan  # non-finite on a feature
    observed[6, 3] = np.inf  # non-finite on a compensation channel (CD19 is not a feature below)
    observed[7, 0] = 262143  # saturated scatter (>= $PnR - 1)
    observed[8, 4] = 300000  # saturated fluorescence
    observed[9, 3] = 262143.5  # saturated on a compensation channel that is not a feature
    observed[10, 1] = 262143  # saturated on a channel not used at all (SSC-A): kept
    path = write_fcs(tmp_path / "qc.fcs", observed, PNN, PNS, keywords={"$SPILL": spill_text(PNN[2:5], SPILL)})
    features = ["FSC-A", "CD3", "CD33"]
    params = FlowEmbedParams(max_events=None, transform="asinh", standardize="none")
    emb = embed_flow_events(path, params, features=features)
    dropped = {5, 6, 7, 8, 9}
    np.testing.assert_array_equal(emb.event_ids, [i for i in range(200) if i not in dropped])
    assert emb.qc["non_finite"] == 2 and emb.qc["saturated"] == 3 and emb.qc["kept"] == 195
    stored = observed.astype(np.float32).astype(np.float64)[emb.event_ids]
    comp = stored[:, 2:5] @ np.linalg.inv(SPILL)
    np.testing.assert_allclose(emb.features[:, 1], np.arcsinh(comp[:, 0] / 150), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb.features[:, 2], np.arcsinh(comp[:, 2] / 150), rtol=1e-5, atol=1e-6)

    # time filter (first/last 10% of the acquisition time) and a scatter gate
    gated = FlowEmbedParams(max_events=None, time_trim=(0.1, 0.1), fsc_min=50_000, compensation="none")
    emb = embed_flow_events(path, gated, features=features)
    t, fsc = observed[:, 5], observed[:, 0]
    ok = (t >= 19.9) & (t <= 179.1) & (fsc >= 50_000) & np.isin(np.arange(200), list({5, 7, 8}), invert=True)
    np.testing.assert_array_equal(emb.event_ids, np.flatnonzero(ok))
    q = FlowEmbedParams(max_events=None, ssc_min_quantile=0.25, compensation="none")
    assert embed_flow_events(path, q, features=features).qc["ssc_gate"] == pytest.approx(0.25 * 197, abs=2)


def test_subsampling_is_seeded(tmp_path):
    _, observed = _events(n=500)
    path = write_fcs(tmp_path / "sub.fcs", observed, PNN, PNS)
    features = ["CD3", "CD19"]
    a = embed_flow_file(path, FlowEmbedParams(max_events=100, seed=1), features=features)
    b = embed_flow_file(path, FlowEmbedParams(max_events=100, seed=1), features=features)
    c = embed_flow_file(path, FlowEmbedParams(max_events=100, seed=2), features=features)
    full = embed_flow_file(path, FlowEmbedParams(max_events=None, seed=1), features=features)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].size == 100 and np.all(np.diff(a[1]) > 0)
    assert not np.array_equal(a[1], c[1])
    np.testing.assert_array_equal(a[0], full[0][a[1]])  # the same events, the same values (fixed scaling)


def test_write_flow_bag_and_pca(tmp_path):
    _, observed = _events(n=300)
    path = write_fcs(tmp_path / "p.fcs", observed, PNN, PNS, keywords={"$SPILL": spill_text(PNN[2:5], SPILL)})
    features = resolve_panel([path])
    assert features == ["FSC-A", "SSC-A", "CD3", "CD19", "CD33"]
    params = FlowEmbedParams(max_events=250)
    write_flow_bag(path, tmp_path / "bags" / "P1.h5", patient="P1", label="aml", params=params, features=features)
    bag = read_bag(tmp_path / "bags" / "P1.h5")
    assert bag.encoder == "flow-logicle" and bag.patient == "P1" and bag.label == "aml"
    assert bag.features.shape == (250, 5)
    ids = np.array([int(i) for i in bag.instance_ids])
    assert np.all((ids >= 0) & (ids < 300)) and len(set(ids)) == 250
    assert json.loads(bag.attrs["feature_names"]) == features
    assert bag.attrs["compensation"] == "$SPILL"

    pca = fit_flow_pca([path], params, features=features, n_components=3)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(3), atol=1e-8)
    pca.save(tmp_path / "pca.npz")
    with_pca = FlowEmbedParams(max_events=250, pca=str(tmp_path / "pca.npz"))
    z, _ = embed_flow_file(path, with_pca, features=features)
    assert z.shape == (250, 3)


# --------------------------------------------------------------------------------------------
# simulator
# --------------------------------------------------------------------------------------------

SIM = FlowSimParams(n_patients_per_class=1, events_mean=2000, events_sd=300)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("flowsim")
    target = simulate_flow_cohort(SIM, root / "target")
    external = simulate_flow_cohort(external_flow_params(SIM, n_patients_per_class=1), root / "external")
    return root, target, external


def test_simulator_writes_cohort_and_truth(cohorts):
    root, target, external = cohorts
    assert list(target.columns) == ["patient", "label", "path", "cohort"]
    pd.testing.assert_frame_equal(target[["patient", "label", "cohort"]], cohort_design(SIM))
    assert list(external["label"]) == ["healthy", "aml"] and set(external["cohort"]) == {"external"}
    truth = read_flow_truth(root / "target")
    means = class_mean_proportions(SIM)
    # over the shared populations, then aml's disease-only population (built in: 5% of its cells)
    assert truth["populations"] == [*POPULATIONS, "aml_only"]
    assert truth["class_mean_proportions"]["aml"] == pytest.approx([*(0.95 * means["aml"]), 0.05])
    assert truth["class_mean_proportions"]["healthy"] == pytest.approx([*means["healthy"], 0.0])
    blasts = POPULATIONS.index("blasts")
    props = {truth["patient_labels"][p]: v[blasts] for p, v in truth["patient_proportions"].items()}
    assert props["aml"] > 0.2 > props["low_blast"] and props["low_blast"] > props["healthy"]
    for row in target.itertuples():
        header = read_fcs_header(row.path)
        assert header.version == "3.1" and header.n_events == truth["patient_n_events"][row.patient]
        assert header.pns[2:12] == list(MARKERS) and header.pnn[-1] == "Time"
        assert "spillover" in header.metadata  # $SPILLOVER
        assert event_populations(root / "target", row.patient).shape == (header.n_events,)
    ext = read_fcs_header(external["path"][0])
    assert ext.pnn[:3] == ["FS INT", "SS INT", "FL9-A"] and "cKit" in ext.pns
    assert "spill" in ext.metadata and "spillover" not in ext.metadata  # SPILL keyword (no $)
    assert resolve_panel(list(target["path"]) + list(external["path"]), FLOW_PANEL) == [m["marker"] for m in FLOW_PANEL]


def _embed_cohort(frame, root, params, features):
    xs, ys = [], []
    for row in frame.itertuples():
        x, ids = embed_flow_file(row.path, params, features=features)
        xs.append(x)
        ys.append(event_populations(root, row.patient)[ids])
    return np.concatenate(xs), np.concatenate(ys)


def test_compensation_matters_and_populations_are_separable(cohorts):
    root, target, external = cohorts
    features = [m["marker"] for m in FLOW_PANEL]
    comp = FlowEmbedParams(panel=FLOW_PANEL, max_events=None)
    x, y = _embed_cohort(target, root / "target", comp, features)
    xu, yu = _embed_cohort(target, root / "target", replace(comp, compensation="none"), features)
    np.testing.assert_array_equal(y, yu)

    # CD3+ T cells spill FITC into the CD33 (PE) detector: uncompensated they look CD33-dim
    cd33 = features.index("CD33")
    t_c, b_c = np.median(x[y == "t_cells", cd33]), np.median(x[y == "b_cells", cd33])
    t_u, b_u = np.median(xu[y == "t_cells", cd33]), np.median(xu[y == "b_cells", cd33])
    assert abs(t_c - b_c) < 0.1  # both CD33-negative once compensated
    assert t_u - b_u > 0.5  # visibly wrong without compensation

    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    acc = cross_val_score(KNeighborsClassifier(15), x, y, cv=cv).mean()
    print(f"kNN (k=15, 5-fold) accuracy on event populations, compensated: {acc:.4f}")
    assert acc > 0.95

    # the external instrument (renamed channels, own spillover, shifted intensities), same embedding
    xe, ye = _embed_cohort(external, root / "external", comp, features)
    transfer = KNeighborsClassifier(15).fit(x, y).score(xe, ye)
    print(f"kNN trained on target, scored on the external instrument: {transfer:.4f}")
    assert transfer > 0.85
