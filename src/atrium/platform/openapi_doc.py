"""The API reference page of the docs site, rendered from the app's own OpenAPI schema.

Operations are grouped by tag in the schema's tag order; each lists its parameters, request
body and responses; component schemas follow with their fields. Rendering the schema the app
serves (rather than writing the reference by hand) is what keeps the page true.
"""

from __future__ import annotations

import re
import tempfile
from typing import Any

_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


def app_schema() -> dict[str, Any]:
    """The OpenAPI document of a freshly built app (nothing is started or connected)."""
    from atrium.app import create_app
    from atrium.settings import Settings

    # The embedded default writes generated secrets into its data folder: use a throw-away one.
    with tempfile.TemporaryDirectory(prefix="atrium-openapi-") as data_dir:
        settings = Settings(
            _env_file=None,
            env="test",
            data_dir=data_dir,
            log_level="ERROR",
        )
        schema: dict[str, Any] = create_app(settings).openapi()
    return schema


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _slug(name: str) -> str:
    # Schema headings carry this explicit id (attr_list), so no tag or operation collides.
    return "schema-" + re.sub(r"[^\w-]", "", name.lower())


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type(schema: dict[str, Any] | None) -> str:
    """A short, linked description of a JSON schema: `Problem`, `array of Row`, `string`."""
    if not schema:
        return "any"
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f"[{name}](#{_slug(name)})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            parts = [_type(part) for part in schema[key] if part.get("type") != "null"]
            nullable = any(part.get("type") == "null" for part in schema[key])
            return " or ".join(parts) + (" or null" if nullable else "")
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _type(schema["allOf"][0])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type", "object")
    if kind == "array":
        return f"array of {_type(schema.get('items'))}"
    if isinstance(kind, list):
        return " or ".join(kind)
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else str(kind)


def _limits(schema: dict[str, Any]) -> str:
    marks = {
        "minimum": "≥",
        "exclusiveMinimum": ">",
        "maximum": "≤",
        "exclusiveMaximum": "<",
        "minLength": "length ≥",
        "maxLength": "length ≤",
        "minItems": "items ≥",
        "maxItems": "items ≤",
        "pattern": "pattern",
    }
    parts = [f"{mark} `{schema[key]}`" for key, mark in marks.items() if key in schema]
    if schema.get("default") is not None:
        parts.append(f"default `{schema['default']}`")
    return "; ".join(parts)


def _notes(description: str, schema: dict[str, Any]) -> str:
    return "; ".join(filter(None, [description.strip().rstrip("."), _limits(schema)]))


def _operation(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"### {method.upper()} `{path}`", ""]
    if operation.get("summary"):
        lines += [f"**{operation['summary']}**", ""]
    if operation.get("description"):
        lines += [operation["description"].strip(), ""]
    security = operation.get("security")
    if security:
        schemes = sorted({name for requirement in security for name in requirement})
        lines += ["Credentials: " + ", ".join(f"`{name}`" for name in schemes), ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | required | notes |", "|---|---|---|---|---|"]
        for param in parameters:
            schema = param.get("schema", {})
            notes = _notes(param.get("description", ""), schema)
            lines.append(
                f"| `{param['name']}` | {param['in']} | {_cell(_type(schema))} "
                f"| {'yes' if param.get('required') else 'no'} | {_cell(notes)} |"
            )
        lines.append("")
    body = operation.get("requestBody")
    if body:
        kinds = [
            f"`{media}`: {_type(content.get('schema'))}"
            for media, content in body.get("content", {}).items()
        ]
        required = " (required)" if body.get("required") else ""
        lines += [f"Request body{required}: " + "; ".join(kinds), ""]
    lines += ["| status | meaning | body |", "|---|---|---|"]
    for status, response in operation.get("responses", {}).items():
        content = response.get("content", {})
        bodies = "; ".join(
            f"`{media}` {_type(item.get('schema'))}" for media, item in content.items()
        )
        lines.append(f"| {status} | {_cell(response.get('description', ''))} | {_cell(bodies)} |")
    lines.append("")
    return lines


def _component(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name} {{#{_slug(name)}}}", ""]
    if schema.get("description"):
        lines += [" ".join(schema["description"].split()), ""]
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        lines += [f"Type: {_type({k: v for k, v in schema.items() if k != 'title'})}", ""]
        return lines
    required = set(schema.get("required", []))
    lines += ["| field | type | required | notes |", "|---|---|---|---|"]
    for field, spec in properties.items():
        notes = _notes(spec.get("description", ""), spec)
        lines.append(
            f"| `{field}` | {_cell(_type(spec))} | {'yes' if field in required else 'no'} "
            f"| {_cell(notes)} |"
        )
    lines.append("")
    return lines


def render_markdown(schema: dict[str, Any]) -> str:
    """Every operation by tag, then every component schema, as one Markdown page body."""
    info = schema.get("info", {})
    lines = [
        f"Generated from the OpenAPI {schema.get('openapi', '')} schema of "
        f"{info.get('title', '')} {info.get('version', '')}.",
        "",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                tag = (item[method].get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append((method, path, item[method]))
    tags = [tag["name"] for tag in schema.get("tags", [])]
    tags += sorted(set(by_tag) - set(tags))
    descriptions = {tag["name"]: tag.get("description", "") for tag in schema.get("tags", [])}
    for tag in tags:
        if tag not in by_tag:
            continue
        lines += [f"## {tag}", ""]
        if descriptions.get(tag):
            lines += [descriptions[tag], ""]
        for method, path, operation in by_tag[tag]:
            lines += _operation(method, path, operation)
    components = schema.get("components", {})
    if components.get("securitySchemes"):
        lines += ["## Security schemes", "", "| name | kind | details |", "|---|---|---|"]
        for name, scheme in components["securitySchemes"].items():
            details = scheme.get("name") or scheme.get("scheme") or ""
            if scheme.get("flows"):
                details = ", ".join(scheme["flows"])
            lines.append(f"| `{name}` | {scheme.get('type', '')} | {_cell(details)} |")
        lines.append("")
    if components.get("schemas"):
        lines += ["## Schemas", ""]
        for name, spec in sorted(components["schemas"].items()):
            lines += _component(name, spec)
    return "\n".join(lines)
