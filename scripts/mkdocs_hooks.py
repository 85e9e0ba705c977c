"""MkDocs hooks: fill the pages whose content the code knows (``mkdocs.yml`` → ``hooks``).

* ``<!-- atrium:settings-table -->`` becomes the table of every setting, from ``Settings``
  (the build fails if a setting has no docstring);
* ``<!-- atrium:openapi -->`` becomes the API reference, from the app's OpenAPI schema, which
  is also published beside it as ``reference/openapi.json``.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

SETTINGS_MARKER = "<!-- atrium:settings-table -->"
OPENAPI_MARKER = "<!-- atrium:openapi -->"


@cache
def _schema() -> dict[str, Any]:
    from atrium.platform.openapi_doc import app_schema

    return app_schema()


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Publish the app's OpenAPI schema next to the reference page."""
    files.append(
        File.generated(
            config, "reference/openapi.json", content=json.dumps(_schema(), indent=2) + "\n"
        )
    )
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replace the markers by the generated tables."""
    if SETTINGS_MARKER in markdown:
        from atrium.platform.settings_doc import settings_table

        try:
            markdown = markdown.replace(SETTINGS_MARKER, settings_table())
        except ValueError as exc:
            raise PluginError(str(exc)) from exc
    if OPENAPI_MARKER in markdown:
        from atrium.platform.openapi_doc import render_markdown

        markdown = markdown.replace(OPENAPI_MARKER, render_markdown(_schema()))
    return markdown
