"""`pipeline bases`: the declared feature size and parameter count match built models, and
`bases NAME --layers` lists cut points that `--layer` accepts, with the shapes they give."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipeline.bases import build_extractor, get_base, list_bases
from pipeline.bases.table import measure
from pipeline.cli import app


def test_every_base_declares_its_sizes():
    assert all(s.feature_size and s.param_count for s in list_bases())


@pytest.mark.parametrize("name", ["mobilenet_0.25", "mobilenet_v3_small",
                                  "efficientnet_lite0"])
def test_declared_sizes_match_a_built_model(name):
    spec = get_base(name)
    assert measure(spec) == (spec.feature_size, spec.param_count)


def test_layers_are_cut_points_with_their_shapes():
    out = CliRunner().invoke(app, ["bases", "mobilenet_v3_small", "--layers", "--json",
                                   "--input-size", "64"])
    assert out.exit_code == 0, out.output
    points = json.loads(out.stdout)
    assert points[-1]["output_shape"][-1] == get_base("mobilenet_v3_small").feature_size
    picked = points[len(points) // 2]
    ex = build_extractor("mobilenet_v3_small", weights=None, input_size=64,
                         layer=picked["layer"], pooling="none")
    assert list(ex.feature_shape) == picked["output_shape"]


def test_layers_need_a_known_base():
    out = CliRunner().invoke(app, ["bases", "mobilenet_v9", "--layers"])
    assert out.exit_code != 0 and "unknown base 'mobilenet_v9'" in str(out.exception)
