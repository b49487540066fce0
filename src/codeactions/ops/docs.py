"""The API documentation: the OpenAPI document as the service behaves, and its Swagger UI page.

Routes declare what they can answer with `error_responses` and `query`; `install_docs` corrects
FastAPI's defaults where the service differs (no 422: invalid input is a 400 each route
documents; the 431 any request may get) and serves the page with its own Swagger UI files (no
CDN: works offline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

ASSETS = "/docs/assets"
# Swagger UI 5 (OpenAPI 3.1), as shipped inside the fastapi-offline package; only its files are used.
SWAGGER_UI_FILES = Path(fastapi_offline.__file__).with_name("static")


class Message(BaseModel):
    """Every error body, as the original's Echo rendered it."""

    message: str


_DESCRIPTIONS = {
    400: "Invalid request: the message says which value and why",
    401: "Missing or invalid credentials",
    403: "The caller's role in the project is too low",
    404: "Not found, or not in one of the caller's projects",
    408: "The code's timeout ran out (queue wait + execution)",
    413: "Request body over the limit",
    429: "Too many requests; `Retry-After` says when to try again",
    431: "Request headers over the limit",
    500: "The code failed: `error on executing code: ...`",
    503: "A dependency (database, Redis, S3, identity provider, runner) cannot serve now; "
    "retry after `Retry-After`",
}


def error_responses(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route for these error statuses, each with the `{"message"}` body;
    a `(status, description)` pair words that status for the route."""
    responses: dict[int | str, dict[str, Any]] = {}
    for entry in statuses:
        status, description = entry if isinstance(entry, tuple) else (entry, _DESCRIPTIONS[entry])
        responses[status] = {"model": Message, "description": description}
    return responses


# Marks a parameter the route reads as optional (so the service answers its absence with the
# original's message) but that the document states as required.
_REQUIRED = "x-codeactions-required"


def query(
    description: str, *, alias: str | None = None, required: bool = False, **schema: Any
) -> Any:
    """A string query parameter checked by the service, documented with the rules it enforces
    (`schema`: JSON Schema keywords such as `maxLength`, `pattern`, `enum`)."""
    extra = {**schema, _REQUIRED: True} if required else schema
    return Query(alias=alias, description=description, json_schema_extra=extra)


def _parameter_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A query or path value is absent or a string, never JSON null: `str | None` is a string."""
    branches = schema.get("anyOf")
    if branches and {"type": "null"} in branches:
        rest = [branch for branch in branches if branch != {"type": "null"}]
        siblings = {k: v for k, v in schema.items() if k != "anyOf"}
        schema = {**rest[0], **siblings} if len(rest) == 1 else {"anyOf": rest, **siblings}
    return schema


def corrected(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document, corrected where the service answers differently from FastAPI's
    defaults: invalid input is a 400 `{"message"}` (errors.py), never a 422."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.setdefault("Message", Message.model_json_schema())
    too_large = {
        "description": _DESCRIPTIONS[431],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}},
    }
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            for parameter in operation.get("parameters", []):
                schema = _parameter_schema(parameter.get("schema", {}))
                if schema.pop(_REQUIRED, False):
                    parameter["required"] = True
                parameter["schema"] = schema
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            # Every request passes the header limit first (http.HeaderLimit).
            responses.setdefault("431", too_large)
    return document


def install_docs(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = corrected(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(ASSETS, StaticFiles(directory=SWAGGER_UI_FILES), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} — API",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
        )
