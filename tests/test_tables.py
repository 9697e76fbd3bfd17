"""Report text: human units and the one table layout (torchslim.tables)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchslim.analysis import analyze
from torchslim.prune.sparsity import sparsify, sparsity_report
from torchslim.quant.report import LayerError, QuantReport
from torchslim.tables import format_count, markdown_table, text_table


def test_format_count() -> None:
    assert format_count(1.82e9, "MACs") == "1.82 GMACs"
    assert format_count(950) == "950"


def test_text_table_aligns_columns_and_trims_trailing_spaces() -> None:
    lines = text_table(("name", "n", "note"), [("a", 1, ""), ("long name", 1234, "x")], right={1})
    assert lines == [
        "name          n  note",
        "---------  ----  ----",
        "a             1",
        "long name  1234  x",
    ]
    assert text_table(("a", "b"), [])[1] == "-  -"


def test_text_table_footer_sits_under_a_second_rule_and_counts_for_widths() -> None:
    lines = text_table(("layer", "MACs"), [("fc", "1")], right={1}, footer=[("total", "12345")])
    assert lines == ["layer   MACs", "-----  -----", "fc         1", "-----  -----", "total  12345"]


def test_text_table_rejects_rows_of_another_width() -> None:
    with pytest.raises(ValueError):
        text_table(("a", "b"), [("only one",)])


def test_markdown_table() -> None:
    assert markdown_table(["a", "b"], [[1, "x"]]) == ["| a | b |", "|---|---|", "| 1 | x |"]


# The reports' tables, as the hand-written formatters before torchslim.tables printed them.
MODEL_STATS = """\
layer  type     input    output   params    MACs
-----  -------  -------  -------  ------  ------
0      Conv2d   1x1x8x8  1x4x6x6      40  1.30 K
1      ReLU     1x4x6x6  1x4x6x6       -       -
2      Flatten  1x4x6x6  1x144         -       -
3      Linear   1x144    1x2         290     288
total: 330 params (330), 1.58 KMACs (1,584), 0.00 MiB"""

SPARSITY = """\
layer  type    shape  params  nonzero  sparsity  dense  sparse  format
-----  ------  -----  ------  -------  --------  -----  ------  -------------
0      Linear  8x8        64       16    75.00%  256 B    72 B  bitmask
2      Linear  4x8        32        8    75.00%  128 B    36 B  bitmask
-----  ------  -----  ------  -------  --------  -----  ------  -------------
total                     96       24    75.00%  384 B   108 B  3.56x smaller"""


def test_reports_print_the_same_tables_as_before() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    assert str(analyze(net, torch.randn(1, 1, 8, 8))) == MODEL_STATS
    sparse = sparsify(
        nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)), {"sparsity": 0.75}
    )
    assert str(sparsity_report(sparse)) == SPARSITY


def test_quant_report_table_marks_the_layers_kept_in_float() -> None:
    layers = [LayerError("conv1", 31.234, 40.0), LayerError("fc", math.inf, None, in_float=True)]
    assert str(QuantReport(layers, 25.5, 0.97)).splitlines() == [
        "layer  output SQNR dB  alone: model SQNR dB",
        "-----  --------------  --------------------  ------------",
        "conv1            31.2                  40.0",
        "fc                inf                     -  (kept float)",
        "model output SQNR 25.5 dB, top-1 agreement 0.970",
    ]
