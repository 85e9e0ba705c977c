"""The generated reference pages: every setting documented, every operation rendered."""

from __future__ import annotations

import re

import pytest

from atrium.platform.openapi_doc import app_schema, render_markdown
from atrium.platform.settings_doc import env_name, settings_table, undocumented_settings
from atrium.settings import Settings


def test_every_setting_has_a_docstring() -> None:
    assert undocumented_settings() == []


def test_the_table_has_one_row_per_setting_with_its_default() -> None:
    table = settings_table()
    rows = [line for line in table.splitlines() if line.startswith("| `ATRIUM_")]
    assert [row.split("`")[1] for row in rows] == [env_name(n) for n in Settings.model_fields]
    assert "| `ATRIUM_PORT` | integer (≥ 1, ≤ 65535) | `8000` | Port `atrium serve`" in table
    assert "| `ATRIUM_MARKET_SYMBOLS` | comma-separated list | `IBM,AAPL` |" in table
    # A default computed on this machine is described, never printed.
    assert "| `ATRIUM_REPLICA_NAME` | text | the host name |" in table


def test_a_setting_without_a_docstring_fails_the_table() -> None:
    class Extended(Settings):
        shiny_new_knob: int = 3

    assert undocumented_settings(Extended) == ["ATRIUM_SHINY_NEW_KNOB"]
    with pytest.raises(ValueError, match="ATRIUM_SHINY_NEW_KNOB"):
        settings_table(Extended)


def test_the_api_reference_renders_every_operation_and_schema() -> None:
    schema = app_schema()
    page = render_markdown(schema)
    for path, item in schema["paths"].items():
        for method in item:
            assert f"### {method.upper()} `{path}`" in page
    for name in schema["components"]["schemas"]:
        assert f"### {name} {{#schema-{name.lower()}}}" in page
    # Every schema link points at a heading of the page.
    anchors = set(re.findall(r"\{#(schema-[\w-]+)\}", page))
    assert set(re.findall(r"\]\(#(schema-[\w-]+)\)", page)) <= anchors
