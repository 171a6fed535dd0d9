"""Flow cytometry on files written by real instruments (tests/data/fcs, see its README for sources and licences).

Every value read is checked against an independent decoding: the bytes of the DATA segment unpacked here with
``struct`` (and, where flowio can read them, flowio's raw, unprocessed events), then gain, log amplification and
``$TIMESTEP`` applied by hand as the FCS standard says.
"""

import hashlib
import json
import logging
import re
import struct
from pathlib import Path

import flowio
import numpy as np
import pytest

from recipe_mil.embed.flow import (
    FlowEmbedParams,
    FlowFileError,
    channel_mapping,
    classify_channel,
    embed_flow_events,
    file_spillover,
    fit_flow_pca,
    list_data_sets,
    read_fcs,
    read_fcs_header,
    resolve_compensation,
    resolve_panel,
    write_flow_bag,
)
from recipe_mil.io.bags import read_bag
from recipe_mil.simulate.flow import write_fcs_file
from test_flow import fcs_bytes

DATA = Path(__file__).resolve().parent / "data" / "fcs"
LOG = "recipe_mil.embed.flow"


# --------------------------------------------------------------------------------------------
# an independent decoder
# --------------------------------------------------------------------------------------------


def _text(path, offset=0):
    fd = flowio.FlowData(
        str(path),
        only_text=True,
        nextdata_offset=offset,
        ignore_offset_error=True,
        ignore_offset_discrepancy=True,
    )
    return fd.text


def data_set_offset(path, data_set):
    offset = 0
    for _ in range(data_set - 1):
        offset += int(_text(path, offset)["nextdata"])
    return offset


def decode_by_hand(path, rows, data_set=1):
    """Raw stored values and preprocessed values of some events, from the file's bytes."""
    offset = data_set_offset(path, data_set)
    t = _text(path, offset)
    raw = Path(path).read_bytes()
    begin = int(t["begindata"]) if "begindata" in t else int(raw[offset + 26 : offset + 34])
    big = t["byteord"].strip().startswith(("4", "3", "2"))
    n = int(t["par"])
    kind = t["datatype"].strip().upper()
    widths = [int(t[f"p{i}b"]) // 8 if kind == "I" else {"F": 4, "D": 8}[kind] for i in range(1, n + 1)]
    stored, values = [], []
    for r in rows:
        pos = offset + begin + r * sum(widths)
        srow, vrow = [], []
        for i, w in enumerate(widths, start=1):
            chunk = raw[pos : pos + w]
            pos += w
            if kind == "I":
                v = int.from_bytes(chunk, "big" if big else "little")
                top = 1 << (int(float(t[f"p{i}r"])) - 1).bit_length()  # $PnR rounded up to a power of two
                v = v % top if top < 1 << (8 * w) else v
            else:
                v = struct.unpack((">" if big else "<") + kind.lower(), chunk)[0]
            srow.append(float(v))
            decades, log0 = (float(x) for x in t.get(f"p{i}e", "0,0").split(","))
            if decades > 0:
                v = 10 ** (decades * v / float(t[f"p{i}r"])) * (log0 or 1.0)
            if t[f"p{i}n"].strip().lower() == "time":
                try:
                    v *= float(t.get("timestep", "1"))
                except ValueError:
                    pass  # an anonymised $TIMESTEP: the ticks
            elif float(t.get(f"p{i}g", "1") or 1) not in (0.0, 1.0):
                v /= float(t[f"p{i}g"])
            vrow.append(float(v))
        stored.append(srow)
        values.append(vrow)
    return np.array(stored), np.array(values)


# --------------------------------------------------------------------------------------------
# every real file: events, channels, compensation, automatic panel, values
# --------------------------------------------------------------------------------------------

STRATEDIGM_PANEL = [
    "FSC LogA",
    "FSC LinA",
    "SSC LogA",
    "SSC LinA",
    "xxxxxxxxxxx",
    "405nm BV710 (710/40) LogH",
    "xxxxxxxxxxxxxx (710/40) LogH",
    "488/552nm PE Cy7 (740LP) LogH",
    "405nm Qdot800 (740LP) LogH",
    "642nm APC Cy7 (740LP) LogH",
    "488/552nm PECy5 (676/29) LogH",
    "xxxxxxx",
    "488/552nm PI (615/30) LogH",
    "405nm Qdot605 (615/30) LogH",
    "488/552nm FITC (530/30) LogH",
    "xxxxxxxxxxxxxxxxxxxxxxxxx",
    "488/552nm PE (580/30) LogH",
    "xxxxxxxxxxxxxx",
    "405nm BV421 (445/60) LogH",
    "xxxxxxxxxxxxxxxxxxxxxxxxxx",
]
NO_SPILL = "none (no spillover keyword in file)"
ANONYMISED_SPILL = "ERROR: names channel 'xxxxxxxxxxxxxxxxxxxxxxxxxxxx'"

# file, (version, data set read, data sets), (events, channels), compensation with 'file', automatic panel
REAL_FILES = [
    (
        "coulter.lmd",
        ("3.0", 2, 2),
        (18110, 8),
        NO_SPILL,
        ["FS", "SS", "FL1", "FL2", "FL3", "FL4", "FL5"],
    ),
    (
        "data1.fcs",
        ("2.0", 1, 1),
        (13367, 8),
        NO_SPILL,
        ["FSC-Height", "SSC-Height", "CD4 FITC", "CD3 PerCP", "FL2-A", "CD8 APC"],
    ),
    (
        "G11.fcs",
        ("3.1", 1, 1),
        (5785, 12),
        "$SPILLOVER",
        ["FSC-A", "SSC-A", "GFP-A", "mCherry-A", "Alexa Fluor™ 405-A"],
    ),
    (
        "B01_KC-A-W---91-US.fcs",
        ("3.1", 1, 1),
        (1589, 14),
        "$SPILLOVER",
        ["FSC-A", "SSC-A", "FITC-A", "PE-A", "PerCP-A", "APC-A"],
    ),
    ("variable_int_example.fcs", ("3.0", 1, 1), (2, 26), ANONYMISED_SPILL, STRATEDIGM_PANEL),
    ("data_start_offset_discrepancy_example.fcs", ("3.0", 1, 1), (2, 26), ANONYMISED_SPILL, STRATEDIGM_PANEL),
    ("data_stop_offset_discrepancy_example.fcs", ("3.0", 1, 1), (2, 26), ANONYMISED_SPILL, STRATEDIGM_PANEL),
    (
        "index_sorted_example.fcs",
        ("3.0", 1, 1),
        (384, 13),
        "$SPILL",
        [
            "FSC-A",
            "SSC-A",
            "CD21;FITC;530/30@488/B",
            "viability;7-AAD;695/40@488/A",
            "CD138;PE;586/15@561/E",
            "CD23;PE-Cy7;780/60@561/A",
            "CD19;APC-H7;780/60@640/A",
            "B220;V500;510/50@405/E",
        ],
    ),
    (
        "SG_2014-09-26_Duplicate_Names.fcs",
        ("3.1", 1, 1),
        (8129, 9),
        NO_SPILL,
        ["FSC-A", "SSC-A", "GFP/FITC-A"],
    ),
    (
        "EY_2013-07-19_PBS_FCS_3.1_Well_A1.001_cut3000.fcs",
        ("3.1", 1, 1),
        (3000, 19),
        "none (empty spillover in file)",
        ["FSC-A", "SSC-A", "V2-A", "Y2-A", "B1-A"],
    ),
    (
        "HTS_BD_LSR_II_Mixed_Specimen_001_D6_D06_cut3000.fcs",
        ("3.0", 1, 1),
        (3000, 11),
        "$SPILL",
        ["FSC-A", "SSC-A", "FITC-A", "PerCP-Cy5-5-A", "AmCyan-A", "PE-TxRed YG-A"],
    ),
    (
        "FCS_3.0_Fortessa_PBS_Specimen_001_A1_A01.fcs",
        ("3.0", 1, 1),
        (11585, 11),
        "$SPILL",
        ["FSC-A", "SSC-A", "FITC-A", "PerCP-Cy5-5-A", "AmCyan-A", "PE-Texas Red-A"],
    ),
    (
        "Sample_Well_A02_cut5000.fcs",
        ("2.0", 1, 1),
        (5000, 8),
        NO_SPILL,
        ["FSC-H", "SSC-H", "FL1-Height", "FL3-Height", "FL2-A", "FL4-Height"],
    ),
    (
        "Cytek_xP5_cut3000.fcs",
        ("3.0", 1, 1),
        (3000, 8),
        NO_SPILL,
        ["FSC", "SSC", "FL1", "FL2", "FL3", "FL4 red", "FL5 red"],
    ),
]


@pytest.mark.filterwarnings("ignore:FCS file .* reported incorrect data offset:UserWarning")
@pytest.mark.parametrize(("name", "version", "shape", "compensation", "panel"), REAL_FILES)
def test_real_file_is_read_exactly(name, version, shape, compensation, panel):
    path = DATA / name
    header, events = read_fcs(path)
    assert (header.version, header.data_set, header.n_data_sets) == version
    assert events.shape == shape == (header.n_events, header.n_channels)

    # a few events, first, middle and last, against the bytes decoded here
    rows = sorted({0, 1, shape[0] // 2, shape[0] - 1})
    stored, expected = decode_by_hand(path, rows, data_set=header.data_set)
    np.testing.assert_allclose(events[rows], expected, rtol=1e-12, atol=0)
    if not header.decode_integers:  # flowio reads the raw values of all but 24-bit files
        raw = flowio.FlowData(
            str(path),
            nextdata_offset=header.data_set_offset,
            ignore_offset_error=True,
            ignore_offset_discrepancy=True,
        )
        np.testing.assert_array_equal(np.reshape(raw.events, (-1, shape[1]))[rows], stored)

    if compensation.startswith("ERROR: "):
        with pytest.raises(FlowFileError, match=re.escape(compensation[len("ERROR: ") :])):
            resolve_compensation(header, "file")
    else:
        assert resolve_compensation(header, "file")[1] == compensation
    assert resolve_panel([path]) == panel

    # the whole embedding on the automatic panel; saturation QC looks at the channels used only
    spec = "none" if compensation.startswith("ERROR") else "file"
    emb = embed_flow_events(path, FlowEmbedParams(max_events=None, compensation=spec), features=panel)
    assert emb.features.shape == (emb.qc["kept"], len(panel)) and np.isfinite(emb.features).all()
    chans = list(channel_mapping(header, panel).values())
    comp, _ = resolve_compensation(header, spec)
    used = sorted({*chans, *(comp.feeding(chans) if comp else [])})
    saturated = (events[:, used] >= header.saturation[used]).any(axis=1)
    assert emb.qc == {
        "non_finite": 0,
        "saturated": int(saturated.sum()),
        "kept": int((~saturated).sum()),
        "subsampled": int((~saturated).sum()),
    }
    np.testing.assert_array_equal(emb.event_ids, np.flatnonzero(~saturated))


def test_offset_discrepancies_give_the_same_events_as_the_compliant_file(caplog):
    _, reference = read_fcs(DATA / "variable_int_example.fcs")
    with caplog.at_level(logging.WARNING, logger=LOG):
        _, start = read_fcs(DATA / "data_start_offset_discrepancy_example.fcs")
        _, stop = read_fcs(DATA / "data_stop_offset_discrepancy_example.fcs")
    np.testing.assert_array_equal(start, reference)
    np.testing.assert_array_equal(stop, reference)
    assert "HEADER bytes 5555-6188, TEXT 6081-6188" in caplog.text
    assert "HEADER bytes 6081-6944, TEXT 6081-6188" in caplog.text
    assert "$TIMESTEP is 'xxxxxxxxx', not a number; ignored" in caplog.text
    # flowio alone refuses all three (discrepancy, or the anonymised $TIMESTEP)
    with pytest.raises(Exception, match="discrepancy"):
        flowio.FlowData(str(DATA / "data_start_offset_discrepancy_example.fcs"))
    with pytest.raises(ValueError, match="Timestep"):
        flowio.FlowData(str(DATA / "variable_int_example.fcs")).as_array()


# --------------------------------------------------------------------------------------------
# 1. data sets of different samples are never reduced silently
# --------------------------------------------------------------------------------------------


def _g11():
    header, events = read_fcs(DATA / "G11.fcs")
    return header, events.astype(np.float32)


def multi_sample_file(path):
    """Four data sets of different wells (events of the real G11.fcs), laid out as a Guava Muse plate export.

    Constructed: no public Guava Muse file could be obtained (see tests/data/fcs/README.md).
    """
    header, events = _g11()
    sizes, wells = [108, 2000, 1500, 1000], ["A01", "A02", "B01", "B02"]
    starts = np.cumsum([0, *sizes[:-1]])
    keep = [i for i, k in enumerate(header.kinds) if k != "time"]
    pnn = [header.pnn[i] for i in keep]
    pns = [header.pns[i] for i in keep]
    chunks = [events[s : s + n][:, keep] for s, n in zip(starts, sizes, strict=True)]
    parts = []
    for k, (chunk, well) in enumerate(zip(chunks, wells, strict=True)):
        kw = {"$SMNO": f"sample-{k + 1}", "$WELLID": well, "$FIL": "plate.fcs"}
        last = k == len(chunks) - 1
        part = fcs_bytes(chunk, pnn, pns, version="3.0", keywords=kw, nextdata="0" * 10)
        if not last:
            part = fcs_bytes(chunk, pnn, pns, version="3.0", keywords=kw, nextdata=f"{len(part):010d}")
        parts.append(part)
    Path(path).write_bytes(b"".join(parts))
    return Path(path), chunks


def test_data_sets_of_different_samples_are_refused_listing_them_and_the_sheet_chooses(tmp_path):
    path, chunks = multi_sample_file(tmp_path / "plate.fcs")
    infos = list_data_sets(path)
    assert [(i.index, i.n_events, i.identity["wellid"]) for i in infos] == [
        (1, 108, "A01"),
        (2, 2000, "A02"),
        (3, 1500, "B01"),
        (4, 1000, "B02"),
    ]
    with pytest.raises(FlowFileError) as err:
        read_fcs(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: the file holds 4 data sets of different samples")
    assert "'dataset' column (1 to 4" in msg
    assert "data set 1 (FCS 3.0): 108 events x 11 channels, SMNO='sample-1', WELLID='A01', FIL='plate.fcs'" in msg
    assert "data set 4 (FCS 3.0): 1000 events x 11 channels, SMNO='sample-4', WELLID='B02'" in msg
    # the automatic panel leaves such a file out (it fails its own job), and with a choice reads it
    with pytest.raises(FlowFileError, match="4 data sets of different samples"):
        resolve_panel([path])
    assert resolve_panel([path], datasets=[3]) == ["FSC-A", "SSC-A", "GFP-A", "mCherry-A", "Alexa Fluor™ 405-A"]
    for k in (1, 3):
        header, events = read_fcs(path, dataset=k)
        assert (
            header.data_set == k
            and header.n_data_sets == 4
            and header.metadata["wellid"] == infos[k - 1].identity["wellid"]
        )
        np.testing.assert_array_equal(events, chunks[k - 1])
    with pytest.raises(FlowFileError, match=r"data set 5 asked for \(sample sheet column 'dataset'\)"):
        read_fcs_header(path, dataset=5)
    # the PCA fit takes the same choices
    pca = fit_flow_pca(
        [path, path],
        FlowEmbedParams(compensation="none"),
        features=["FSC-A", "GFP-A"],
        n_components=1,
        events_per_file=100,
        datasets=[2, 4],
    )
    assert pca.components.shape == (1, 2)

    # the same events counted the same in two FCS 3.0 data sets: ambiguous, refused too
    same = fcs_bytes(chunks[1], [f"C{i}" for i in range(11)], version="3.0", nextdata="0" * 10)
    first = fcs_bytes(chunks[1], [f"C{i}" for i in range(11)], version="3.0", nextdata=f"{len(same):010d}")
    (tmp_path / "twice.fcs").write_bytes(first + same)
    with pytest.raises(FlowFileError, match="2 data sets of different samples"):
        read_fcs_header(tmp_path / "twice.fcs")


def test_beckman_lmd_keeps_reading_its_full_resolution_data_set(caplog):
    path = DATA / "coulter.lmd"
    infos = list_data_sets(path)
    assert [(i.index, i.version, i.n_events, i.n_channels) for i in infos] == [
        (1, "2.0", 18110, 8),
        (2, "3.0", 18110, 8),
    ]
    assert infos[0].identity["@sampleid1"] == infos[1].identity["@sampleid1"] == "life-dead-comp"
    with caplog.at_level(logging.INFO, logger=LOG):
        header = read_fcs_header(path)
    assert header.data_set == 2 and header.pnn[0] == "FS" and header.data_set_offset == infos[1].offset
    assert "2 data sets of the same 18110 events (FCS 2.0, 3.0); reading data set 2 (FCS 3.0)" in caplog.text
    # the sheet may still ask for the FCS 2.0 data set (10-bit, other channels)
    low, events = read_fcs(path, dataset=1)
    assert low.version == "2.0" and low.pnn[:3] == ["FS Lin", "SS Lin", "FL1 Log"] and events.shape == (18110, 8)
    assert events[:, 0].max() < 1024


# --------------------------------------------------------------------------------------------
# 2. counters and housekeeping channels never become features
# --------------------------------------------------------------------------------------------


def test_macsquant_counters_are_left_out_by_name_and_by_content(tmp_path, caplog):
    path = DATA / "SG_2014-09-26_Duplicate_Names.fcs"
    header, events = read_fcs(path)
    assert header.pnn[:3] == ["HDR-CE", "HDR-SE", "HDR-V"] and header.kinds[:3] == ["counter"] * 3
    for i in range(3):  # never decreasing over the 8129 events
        assert np.all(np.diff(events[:, i]) >= 0) and events[-1, i] > events[0, i]
    counts = events[:, 0] * 3000  # CE (= SE) is an event count divided by 3000
    np.testing.assert_allclose(counts, np.round(counts), atol=0.01)
    assert np.all(np.diff(np.round(counts)) >= 1) and np.array_equal(events[:, 0], events[:, 1])
    with caplog.at_level(logging.INFO, logger=LOG):
        assert resolve_panel([path]) == ["FSC-A", "SSC-A", "GFP/FITC-A"]
    assert "HDR-CE (counter)" in caplog.text and "FSC-H (height (the detector has an area channel))" in caplog.text
    with pytest.raises(FlowFileError, match="matches the counter channel 'HDR-V'; event counters are never features"):
        channel_mapping(header, ["HDR-V"])

    # the same file with the counters renamed like markers: their content gives them away
    renamed = ["FL9-A", "FL10-A", "FL11-A"]
    disguised = tmp_path / "disguised.fcs"
    write_fcs_file(disguised, events, [*renamed, *header.pnn[3:]], [*renamed, *header.pns[3:]])
    with caplog.at_level(logging.INFO, logger=LOG):
        assert resolve_panel([disguised]) == ["FSC-A", "SSC-A", "GFP/FITC-A"]
    assert "FL9-A (counter: never decreases over the acquisition)" in caplog.text
    with pytest.raises(FlowFileError, match=r"feature\(s\) 'FL11-A' \(FL11-A\) never decrease over the 8129 events"):
        embed_flow_events(disguised, FlowEmbedParams(compensation="none"), features=["FSC-A", "FL11-A"])


def test_time_named_in_pns_only_is_time():
    header = read_fcs_header(DATA / "EY_2013-07-19_PBS_FCS_3.1_Well_A1.001_cut3000.fcs")
    assert (header.pnn[0], header.pns[0], header.kinds[0]) == ("Time", "HDR-T", "time")
    assert classify_channel("HDR-TM", "Time").kind == "time"  # the MACSQuant Analyzer's spelling
    assert header.kinds[1:4] == ["counter"] * 3 and header.measures[6] == "width"


# --------------------------------------------------------------------------------------------
# 3. a spillover keyword without coefficients
# --------------------------------------------------------------------------------------------


def test_spillover_without_coefficients_warns_records_and_strict_fails(tmp_path, caplog):
    path = DATA / "EY_2013-07-19_PBS_FCS_3.1_Well_A1.001_cut3000.fcs"
    header = read_fcs_header(path)
    assert header.metadata["spillover"] == "6,FL2-A,FL2-H,FL4-A,FL4-H,FL7-A,FL7-H"
    assert file_spillover(header) == (["FL2-A", "FL2-H", "FL4-A", "FL4-H", "FL7-A", "FL7-H"], None, "$SPILLOVER")
    features = ["FSC-A", "SSC-A", "V2-A", "Y2-A", "B1-A"]
    with caplog.at_level(logging.WARNING, logger=LOG):
        params = FlowEmbedParams(max_events=2000)
        write_flow_bag(path, tmp_path / "P1.h5", patient="P1", label="a", params=params, features=features)
    assert "has a $SPILLOVER keyword naming channels ['FL2-A'" in caplog.text and "but no coefficients" in caplog.text
    bag = read_bag(tmp_path / "P1.h5")
    assert bag.attrs["compensation"] == "none (empty spillover in file)"
    assert bag.features.shape == (2000, 5)
    with pytest.raises(FlowFileError, match=r"compensation 'file_strict': the file has a \$SPILLOVER keyword naming"):
        embed_flow_events(path, FlowEmbedParams(compensation="file_strict"), features=features)
    with pytest.raises(FlowFileError, match="compensation 'file_strict': the file has no"):
        embed_flow_events(DATA / "data1.fcs", FlowEmbedParams(compensation="file_strict"), features=["CD4 FITC"])


# --------------------------------------------------------------------------------------------
# 4. area channels by default; saturation QC on the channels used only
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "saturated_width"),
    [
        ("HTS_BD_LSR_II_Mixed_Specimen_001_D6_D06_cut3000.fcs", 1409),
        ("FCS_3.0_Fortessa_PBS_Specimen_001_A1_A01.fcs", 2199),
    ],
)
def test_widths_at_their_maximum_no_longer_drop_events(name, saturated_width):
    path = DATA / name
    header, events = read_fcs(path)
    fsc_w = header.pnn.index("FSC-W")
    at_max = events >= header.saturation
    assert int(at_max[:, fsc_w].sum()) == saturated_width  # FSC-W at its maximum: 47% and 19% of the events
    features = resolve_panel([path])
    assert "FSC-W" not in features and "FSC-H" not in features and "SSC-W" not in features
    comp, _ = resolve_compensation(header, "file")
    mapping = channel_mapping(header, features)
    used = sorted({*mapping.values(), *comp.feeding(list(mapping.values()))})
    emb = embed_flow_events(path, FlowEmbedParams(max_events=None), features=features)
    assert emb.qc["saturated"] == int(at_max[:, used].any(axis=1).sum()) < 10
    # a panel that names FSC-W makes it a channel used: then its saturated events go
    wide = embed_flow_events(path, FlowEmbedParams(max_events=None), features=[*features, "FSC-W"])
    assert wide.qc["saturated"] == int(at_max[:, [*used, fsc_w]].any(axis=1).sum()) >= saturated_width


# --------------------------------------------------------------------------------------------
# 5. a channel's kind from $PnN and $PnS
# --------------------------------------------------------------------------------------------


def test_facscalibur_fl2w_labelled_fl4_height_is_fl4s_height(caplog):
    path = DATA / "Sample_Well_A02_cut5000.fcs"
    with caplog.at_level(logging.INFO, logger=LOG):
        header, events = read_fcs(path)
    i = header.pnn.index("FL2-W")
    assert header.pns[i] == "FL4-Height"
    assert (header.kinds[i], header.measures[i], header.detectors[i]) == ("fluorescence", "height", "fl4")
    assert (
        "FL2-W fluorescence height [height of detector 'FL4' from $PnS 'FL4-Height' ($PnN says width)]" in caplog.text
    )
    assert resolve_panel([path])[-1] == "FL4-Height"
    emb = embed_flow_events(path, FlowEmbedParams(max_events=None, compensation="none"), features=["FL4-Height"])
    assert emb.channels == {"FL4-Height": "FL2-W"} and emb.qc["kept"] == 5000
    assert np.unique(events[:, i]).size == 60 and events[:, i].max() == 90  # a signal (FL4 dim in this tube)


# --------------------------------------------------------------------------------------------
# 6. blank DATA offsets in the HEADER
# --------------------------------------------------------------------------------------------


def test_blank_header_data_offsets_are_read_through_the_text(tmp_path, caplog):
    original = DATA / "FCS_3.0_Fortessa_PBS_Specimen_001_A1_A01.fcs"
    blank = bytearray(original.read_bytes())
    blank[26:42] = b" " * 16
    blank += b"\n"
    path = tmp_path / "fake_large_fcs.fcs"
    path.write_bytes(bytes(blank))
    # this is fcsparser's fake_large_fcs.fcs, byte for byte
    assert (
        hashlib.sha256(bytes(blank)).hexdigest() == "45234ff32577dc15fb06af813cc103bbd3ceb44a66ba0be5db14a2434a200341"
    )
    with pytest.raises(ValueError, match="invalid literal for int"):
        flowio.FlowData(str(path))  # flowio alone
    with caplog.at_level(logging.WARNING, logger=LOG):
        header, events = read_fcs(path)
    assert "the HEADER's DATA offsets (bytes 26-41) are blank" in caplog.text and header.blank_data_offsets
    np.testing.assert_array_equal(events, read_fcs(original)[1])

    # without $BEGINDATA/$ENDDATA in the TEXT nothing locates the DATA segment: that is the reason given
    hidden = bytes(blank).replace(b"$BEGINDATA", b"$BEGINDATX", 1).replace(b"$ENDDATA", b"$ENDDATX", 1)
    (tmp_path / "lost.fcs").write_bytes(hidden)
    with pytest.raises(FlowFileError, match=r"the HEADER's DATA offsets \(bytes 26-41\) are blank and the TEXT has no"):
        read_fcs_header(tmp_path / "lost.fcs")


# --------------------------------------------------------------------------------------------
# 7. 24-bit integers
# --------------------------------------------------------------------------------------------


def test_24_bit_integers_are_read_big_and_little_endian(tmp_path):
    path = DATA / "Cytek_xP5_cut3000.fcs"
    header, events = read_fcs(path)
    assert header.decode_integers and header.metadata["byteord"] == "4,3,2,1"
    assert {header.metadata[f"p{i}b"] for i in range(1, 9)} == {"24"}
    _, expected = decode_by_hand(path, range(3000))
    np.testing.assert_allclose(events, expected, rtol=1e-12)
    assert np.all(np.diff(events[:, 0]) >= 0)  # TIME, in seconds ($TIMESTEP 0.001)
    assert events[:, 1].max() <= 1023 and events[:, 3].max() <= 10**4  # FSC linear; FL1 four decades
    with pytest.warns(UserWarning, match="Non-standard bit width"):
        flowio.FlowData(str(path))  # flowio alone does not decode them

    # the same values written little-endian: each 3-byte value reversed, $BYTEORD 1,2,3,4
    raw = bytearray(path.read_bytes())
    begin, n = int(header.metadata["begindata"]), 3000 * 8
    values = np.frombuffer(bytes(raw[begin : begin + 3 * n]), dtype=np.uint8).reshape(n, 3)
    raw[begin : begin + 3 * n] = values[:, ::-1].tobytes()
    little = tmp_path / "little.fcs"
    little.write_bytes(bytes(raw).replace(b"$BYTEORD\\4,3,2,1", b"$BYTEORD\\1,2,3,4"))
    header_le, events_le = read_fcs(little)
    assert header_le.metadata["byteord"] == "1,2,3,4"
    np.testing.assert_array_equal(events_le, events)

    # integers that are not whole bytes (bit-packed 10-bit values) are refused, saying so
    ten = bytes(raw).replace(b"$P2B\\24", b"$P2B\\10")
    (tmp_path / "ten.fcs").write_bytes(ten)
    with pytest.raises(FlowFileError, match=r"integer bit width\(s\) \[10\] \(\$PnB\) are not whole bytes"):
        read_fcs_header(tmp_path / "ten.fcs")


def test_bag_records_the_data_set_read(tmp_path):
    write_flow_bag(
        DATA / "coulter.lmd",
        tmp_path / "L.h5",
        patient="L",
        label="a",
        params=FlowEmbedParams(max_events=500),
        features=["FS", "SS", "FL1"],
    )
    bag = read_bag(tmp_path / "L.h5")
    assert bag.attrs["data_set"] == 2 and bag.attrs["n_data_sets"] == 2
    assert json.loads(bag.attrs["channels"]) == {"FS": "FS", "SS": "SS", "FL1": "FL1"}


# --------------------------------------------------------------------------------------------
# the sample sheet's dataset column, and a real cohort through the workflow
# --------------------------------------------------------------------------------------------


def test_sheet_dataset_column_is_checked(tmp_path):
    from recipe_mil.sheets import SampleSheetError, check_sheet, load_sheet

    plate, _ = multi_sample_file(tmp_path / "plate.fcs")
    rows = [("P1", "a", plate, "1"), ("P2", "a", plate, "2"), ("P3", "b", plate, "x"), ("P4", "b", plate, "2")]
    sheet_path = tmp_path / "s.tsv"
    sheet_path.write_text("patient\tlabel\tpath\tdataset\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    sheet = load_sheet(sheet_path, modality="flow")
    assert list(sheet.columns) == ["patient", "label", "path", "cohort", "dataset"]
    with pytest.raises(SampleSheetError) as err:
        check_sheet(sheet, source=str(sheet_path), classes=["a", "b"], n_folds=1, file_paths=True)
    msg = str(err.value)
    assert "dataset must be blank or a data set number (1, 2, ...) at line 4 (P3)" in msg
    assert f"one file (and data set) listed for several patients at line 3 (P2: {plate}), line 5 (P4: {plate})" in msg
    with pytest.raises(SampleSheetError, match="column 'dataset' .* is for flow data only"):
        load_sheet(sheet_path, modality="image")
    # without the column a flow sheet gets a blank one
    (tmp_path / "plain.tsv").write_text(f"patient\tlabel\tpath\nP1\ta\t{plate}\n")
    assert load_sheet(tmp_path / "plain.tsv", modality="flow")["dataset"].tolist() == [""]


@pytest.mark.slow  # ~40 s of CPU, but a snakemake run of ~15 jobs: over a minute on a loaded machine
def test_real_cohort_through_the_workflow(tmp_path):
    """Eight patients cut from the real G11.fcs (one of them a data set of a plate file) to summary.tsv."""
    from test_workflow import TINY, run_to_end

    header, events = read_fcs(DATA / "G11.fcs")
    keywords = {
        "spillover": header.metadata["spillover"],
        **{f"p{i + 1}r": str(int(r)) for i, r in enumerate(header.ranges)},
    }
    rows = []
    for k in range(7):  # seven patients, 600 consecutive events each, written with flowio
        path = tmp_path / "fcs" / f"P{k + 1}.fcs"
        path.parent.mkdir(exist_ok=True)
        write_fcs_file(path, events[600 * k : 600 * (k + 1)], header.pnn, header.pns, keywords=keywords)
        rows.append((f"P{k + 1}", "a" if k < 4 else "b", path, ""))
    plate, chunks = multi_sample_file(tmp_path / "fcs" / "plate.fcs")
    rows.append(("P8", "b", plate, "2"))  # the plate's second well (2000 events)
    sheet = tmp_path / "flow.tsv"
    sheet.write_text("patient\tlabel\tpath\tdataset\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    config = {
        **TINY,
        "datasets": {
            "real_flow": {"modality": "flow", "classes": ["a", "b"], "samples": str(sheet), "flow": {"max_events": 200}}
        },
        "splits": {"n_folds": 2},
        "scenarios": {"full": True},
        "methods": ["real_only"],
    }
    run_to_end(tmp_path, config)
    summary = (tmp_path / "results/summary.tsv").read_text().splitlines()
    assert len(summary) == 1 + 2 and all("real_flow" in line and "real_only" in line for line in summary[1:])
    features = (tmp_path / "results/real_flow/flow_panel.tsv").read_text(encoding="utf-8").split("\n")[1:-1]
    assert features == ["FSC-A", "SSC-A", "GFP-A", "mCherry-A", "Alexa Fluor™ 405-A"]  # no Time, heights, widths
    p1 = read_bag(tmp_path / "results/real_flow/bags/P1.h5")
    assert p1.features.shape == (200, 5) and p1.attrs["compensation"] == "$SPILLOVER" and p1.attrs["data_set"] == 1
    assert json.loads(p1.attrs["feature_names"]) == features
    p8 = read_bag(tmp_path / "results/real_flow/bags/P8.h5")
    assert p8.features.shape == (200, 5) and (p8.attrs["data_set"], p8.attrs["n_data_sets"]) == (2, 4)
    assert p8.attrs["compensation"] == NO_SPILL
    ids = np.array([int(i) for i in p8.instance_ids])
    assert ids.min() >= 0 and ids.max() < len(chunks[1])  # events of data set 2, indexed within it
