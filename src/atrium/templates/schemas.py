"""Request and response bodies of the templates domain."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

# PostgreSQL cannot store NUL; saying so in the schema makes it a 422, never a 500.
NO_NUL = r"^[^\x00]*$"
NAME_MAX = 255
DESCRIPTION_MAX = 10_000
# Sized so that the longest valid body, even with every character JSON-escaped (6 bytes), stays
# under the default ATRIUM_MAX_BODY_BYTES: a too-long field is then a 422, never a 413.
CONTENT_MAX = 100_000

Name = Annotated[str, Field(max_length=NAME_MAX, pattern=NO_NUL, description="Template name.")]
Description = Annotated[
    str, Field(max_length=DESCRIPTION_MAX, pattern=NO_NUL, description="What it is for.")
]
Content = Annotated[
    str, Field(max_length=CONTENT_MAX, pattern=NO_NUL, description="The template text.")
]

_EXAMPLE_IN: dict[str, Any] = {
    "name": "welcome-email",
    "description": "Sent when a user registers",
    "content": "Hello {{ name }}, welcome to Atrium!",
}
_EXAMPLE_OUT: dict[str, Any] = {
    "tidx": 1,
    "templateid": "3f1c8f0e-6a47-4a8e-9d3e-2f6f6f1b9a10",
    **_EXAMPLE_IN,
    "created": "2026-11-25T10:00:00.123000Z",
    "modified": "2026-11-25T10:00:00.123000Z",
}


class TemplateIn(BaseModel):
    """A whole template (POST creates one, PUT replaces one); omitted fields are empty."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE_IN]})

    name: Name = ""
    description: Description = ""
    content: Content = ""


class TemplatePatch(BaseModel):
    """Some fields of a template (PATCH): only the fields present change."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"content": "Hi {{ name }}!"}]}
    )

    name: Name = ""
    description: Description = ""
    content: Content = ""


class TemplateOut(BaseModel):
    """A stored template; ``created`` and ``modified`` are set by the database."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_OUT]})

    tidx: int = Field(description="Serial number (primary key).")
    templateid: uuid.UUID = Field(description="Public identifier, used in URLs.")
    name: str
    description: str
    content: str
    created: datetime
    modified: datetime


class TemplatePage(BaseModel):
    """One page of templates, ordered by ``tidx``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [_EXAMPLE_OUT], "total": 1, "limit": 50, "offset": 0}]
        }
    )

    items: list[TemplateOut]
    total: int = Field(description="Templates matching the filter, over all pages.")
    limit: int
    offset: int
