"""OpenAPI post-processing: every operation declares its problem+json error responses."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from atrium.platform.errors import PROBLEM_MEDIA_TYPE, Problem

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_PROBLEM_CONTENT = {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}
_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def install_openapi(app: FastAPI) -> None:
    """Replace FastAPI's default 422 schema by ours and add a problem ``default`` response."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = Problem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        for path_item in schema.get("paths", {}).values():
            for method, operation in path_item.items():
                if method not in _METHODS:
                    continue
                responses = operation.setdefault("responses", {})
                # Every request can fail validation (headers, malformed JSON, size...).
                responses["422"] = {
                    "description": "Validation error",
                    "content": _PROBLEM_CONTENT,
                }
                for status, response in responses.items():
                    if status.startswith(("4", "5")) and "content" in response:
                        content = response["content"]
                        if "application/json" in content and PROBLEM_MEDIA_TYPE not in content:
                            schema_ref = content["application/json"].get("schema", {})
                            if schema_ref.get("$ref", "").endswith(
                                ("/Problem", "/HTTPValidationError")
                            ):
                                response["content"] = _PROBLEM_CONTENT
                responses.setdefault(
                    "default",
                    {"description": "Error (problem details)", "content": _PROBLEM_CONTENT},
                )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
