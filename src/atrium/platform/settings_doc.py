"""The settings reference, generated from :class:`atrium.settings.Settings`.

The docs site's configuration page is built from this table, so it cannot drift from the code:
a setting without a docstring is an error (the docs build and the test suite both fail on it).
"""

from __future__ import annotations

import socket
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from atrium.settings import Settings

# Defaults computed at start-up: show what they mean, never this machine's value.
_DYNAMIC_DEFAULTS: dict[Callable[..., Any], str] = {socket.gethostname: "the host name"}

_PREFIX = str(Settings.model_config.get("env_prefix", ""))


def env_name(field: str) -> str:
    """The environment variable of a setting: ``data_dir`` → ``ATRIUM_DATA_DIR``."""
    return f"{_PREFIX}{field}".upper()


def undocumented_settings(settings_class: type[Settings] = Settings) -> list[str]:
    """Variables of the settings that have no docstring (must be none)."""
    return [
        env_name(name)
        for name, field in settings_class.model_fields.items()
        if not (field.description or "").strip()
    ]


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _without_none(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _bounds(metadata: Iterable[Any]) -> str:
    parts: list[str] = []
    for item in metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None and isinstance(item, annotated_types.BaseMetadata):
                parts.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return ", ".join(parts)


def _type(field: FieldInfo) -> str:
    annotation, _ = _without_none(field.annotation)
    if typing.get_origin(annotation) is Literal:
        return " \\| ".join(f"`{choice}`" for choice in typing.get_args(annotation))
    if typing.get_origin(annotation) is list:
        return "comma-separated list"
    names = {bool: "boolean", int: "integer", float: "number", str: "text", Path: "path"}
    if annotation is SecretStr:
        return "secret"
    name = names.get(annotation, getattr(annotation, "__name__", str(annotation)))
    bounds = _bounds(field.metadata)
    return f"{name} ({bounds})" if bounds else name


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        factory = field.default_factory
        if factory in _DYNAMIC_DEFAULTS:
            return _DYNAMIC_DEFAULTS[factory]
        value = factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`{','.join(map(str, value))}`" if value else "empty"
    if value == "":
        return "empty"
    return f"`{value}`"


def settings_table(settings_class: type[Settings] = Settings) -> str:
    """The Markdown table of every setting: variable, type, default, meaning."""
    missing = undocumented_settings(settings_class)
    if missing:
        raise ValueError(
            "settings without a docstring (add one under the field in settings.py): "
            + ", ".join(missing)
        )
    rows = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for name, field in settings_class.model_fields.items():
        rows.append(
            f"| `{env_name(name)}` | {_type(field)} | {_default(field)} "
            f"| {_one_line(field.description or '')} |"
        )
    return "\n".join(rows) + "\n"
