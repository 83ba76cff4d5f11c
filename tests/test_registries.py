"""The registries and the CLI package: filled by their table modules, cheap to import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from pipeline.bases import get_base, list_bases, register
from pipeline.heads import HeadSpec, get_head_spec, list_heads, register_head


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_listing_head_kinds_imports_no_tensorflow():
    loaded = _modules_after("from pipeline.heads.registry import list_heads; list_heads()")
    assert "pipeline.heads.keras_heads" in loaded  # the table was loaded ...
    assert not {"tensorflow", "keras"} & loaded  # ... without the framework


def test_importing_the_base_registry_builds_no_family_table():
    loaded = _modules_after("import pipeline.bases.registry")
    assert "pipeline.bases.registry" in loaded
    assert not {"pipeline.bases.table", "pipeline.bases.keras_apps",
                "pipeline.bases.efficientnet_lite"} & loaded


def test_built_in_entries_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="registered twice"):
        register(get_base("vgg16"))
    with pytest.raises(ValueError, match="registered twice"):
        register_head(get_head_spec("logreg"))
    assert [s.name for s in list_bases()].count("vgg16") == 1
    assert [s.kind for s in list_heads()].count("logreg") == 1


def test_a_spec_declares_consistent_capabilities():
    logreg = get_head_spec("logreg")
    with pytest.raises(ValueError, match="finetunable needs layers"):
        HeadSpec("x", "x", logreg.cls, (), "sklearn", finetunable=True)
    with pytest.raises(ValueError, match="scaling must be one of"):
        HeadSpec("x", "x", logreg.cls, (), "sklearn", scaling="quadratic")


def test_the_cli_package_exposes_the_typer_app_with_every_command():
    from pipeline.cli import app, main

    assert isinstance(app, typer.Typer) and callable(main)
    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    names |= {g.name for g in app.registered_groups}  # `runs` is a group (`runs rm`)
    assert {"extract", "bases", "heads", "fit-head", "runs", "finetune", "predict",
            "export"} <= names


def test_heads_command_shows_what_each_kind_can_do():
    """`pipeline heads` reads the capabilities from the specs (nothing hard-coded there)."""
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.heads import get_head_spec

    out = CliRunner().invoke(app, ["heads"], env={"COLUMNS": "250"}).output
    rows = {line.split("│")[1].strip(): line for line in out.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    for kind in ("logreg", "knn", "random_forest"):
        spec = get_head_spec(kind)
        assert f"export: {', '.join(spec.export_formats)}" in rows[kind]
    assert "fine-tune: no" in out and "fine-tune: yes" in out
