"""Small JSON-over-HTTP helpers shared by lkserver's REST routes (the tenant gateway and the
Analytics API): JSON answers, JSON errors `{"error": message, "code": CODE}`, query parameters
read the way Go's `url.Values.Get` does, JSON object bodies with clear 400s."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(body, ensure_ascii=False).encode(),
                        content_type="application/json", headers=headers)


def error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return json_response({"error": message, "code": code}, status, headers)


def raw_path(request: web.Request) -> str:
    """The request path still percent-encoded (so an encoded "/" stays inside its segment), with a
    doubled leading slash removed as the HTTP shell does."""
    path = request.rel_url.raw_path
    return path[1:] if path.startswith("//") else path


def query_params(request: web.Request) -> dict[str, str]:
    """Each query parameter's first value (as Go's url.Values.Get)."""
    out: dict[str, str] = {}
    for key, value in request.query.items():
        out.setdefault(key, value)
    return out


class BadBody(ValueError):
    """The request body is not what the route takes; the message says why (HTTP 400)."""


async def read_json_object(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadBody("request body too large") from None
    if not raw.strip():
        raise BadBody("a JSON object body is required")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise BadBody("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadBody("the body must be a JSON object")
    return body


def string_field(body: Mapping[str, Any], name: str, *, required: bool = True, max_len: int = 0) -> str:
    if name not in body:
        if required:
            raise BadBody(f"{name} is required")
        return ""
    value = body[name]
    if not isinstance(value, str):
        raise BadBody(f"{name} must be a string")
    if required and not value:
        raise BadBody(f"{name} must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # JSON allows a lone surrogate escape (\ud800); UTF-8 does not
        raise BadBody(f"{name} is not valid Unicode text (a lone surrogate)") from None
    if max_len and size > max_len:
        raise BadBody(f"{name} is longer than {max_len} bytes")
    return value


def bool_field(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name)
    if not isinstance(value, bool):
        raise BadBody(f"{name} is required and must be true or false")
    return value


__all__ = ["BadBody", "bool_field", "error", "json_response", "query_params", "raw_path",
           "read_json_object", "string_field"]
