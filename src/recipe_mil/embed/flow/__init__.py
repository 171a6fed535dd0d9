"""Per-patient bags of event embeddings from flow-cytometry ``.fcs`` files (modality ``flow``).

One FCS file (or one data set of it) is one patient; one event is one instance. The steps live in
sub-modules, and every public name is importable from here:

- :mod:`~recipe_mil.embed.flow.datasets` and :mod:`~recipe_mil.embed.flow.fcs`: reading. flowio
  parses the TEXT and reads the events; the HEADER and TEXT are checked against the file first, so
  that a truncated, empty or inconsistent file gives a :class:`FlowFileError` naming the file and
  the reason; a file holding data sets of several samples is never reduced to one silently.
- :mod:`~recipe_mil.embed.flow.kinds`: what each channel measures (scatter, fluorescence, time,
  counter; area, height, width), from ``$PnN`` and ``$PnS``.
- :mod:`~recipe_mil.embed.flow.panel`: matching features to channels; the automatic panel.
- :mod:`~recipe_mil.embed.flow.compensation`: spillover matrices.
- :mod:`~recipe_mil.embed.flow.embed`: event QC, compensation, transform, scaling, bags, PCA.
"""

from recipe_mil.embed.flow.compensation import (
    Compensation,
    file_spillover,
    parse_spillover,
    read_compensation_csv,
    resolve_compensation,
)
from recipe_mil.embed.flow.datasets import DataSetInfo, list_data_sets
from recipe_mil.embed.flow.embed import (
    FlowEmbedding,
    FlowEmbedParams,
    FlowPCA,
    embed_flow_events,
    embed_flow_file,
    fit_flow_pca,
    write_flow_bag,
)
from recipe_mil.embed.flow.errors import FlowFileError
from recipe_mil.embed.flow.fcs import FcsHeader, read_fcs, read_fcs_header
from recipe_mil.embed.flow.kinds import ChannelInfo, ChannelKind, channel_kind, classify_channel
from recipe_mil.embed.flow.panel import (
    PanelMarker,
    PanelSpec,
    auto_features,
    channel_mapping,
    content_flags,
    parse_panel,
    resolve_panel,
)

__all__ = [
    "ChannelInfo",
    "ChannelKind",
    "Compensation",
    "DataSetInfo",
    "FcsHeader",
    "FlowEmbedParams",
    "FlowEmbedding",
    "FlowFileError",
    "FlowPCA",
    "PanelMarker",
    "PanelSpec",
    "auto_features",
    "channel_kind",
    "channel_mapping",
    "classify_channel",
    "content_flags",
    "embed_flow_events",
    "embed_flow_file",
    "file_spillover",
    "fit_flow_pca",
    "list_data_sets",
    "parse_panel",
    "parse_spillover",
    "read_compensation_csv",
    "read_fcs",
    "read_fcs_header",
    "resolve_compensation",
    "resolve_panel",
    "write_flow_bag",
]
