"""Tenants of the gateway: who is calling, and which rooms are theirs. No I/O.

Reproduces SaynaAI/sayna's model (reference media-services.md §5.2, §5.3): the caller presents a
tenant secret as `Authorization: Bearer <secret>` or `?api_key=<secret>` (the header wins); the
matching tenant id is the caller's `auth_id`; a room belongs to the tenant whose id is its
metadata's `auth_id` (metadata is a JSON object; other keys are kept). With auth off there is no
tenant and every room is visible (sayna's backward-compatible mode).

Where lkserver is stricter than the anchor: a room without an `auth_id` (or with metadata that is
not a JSON object) belongs to nobody and is never claimed by a tenant; secrets are compared in
constant time.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping

BEARER = "Bearer "


class AuthError(Exception):
    """401: the request carries no usable tenant credential."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Tenants:
    def __init__(self, tenants: Mapping[str, str], auth_required: bool) -> None:
        self.auth_required = auth_required
        self._by_secret = [(secret.encode(), tenant) for tenant, secret in tenants.items()]

    def identify(self, authorization: str | None, api_key: str | None) -> str | None:
        """The calling tenant's id; None in the open mode (auth off). Raises AuthError."""
        if not self.auth_required:
            return None
        if authorization:
            if not authorization.startswith(BEARER):
                raise AuthError("invalid_auth_header", "the Authorization header must be 'Bearer <token>'")
            secret = authorization[len(BEARER):].strip()
        elif api_key:
            secret = api_key
        else:
            raise AuthError("missing_auth_header",
                            "missing credentials: send Authorization: Bearer <token> or ?api_key=<token>")
        given = secret.encode()
        found = None
        for candidate, tenant in self._by_secret:  # every secret is compared: no early exit
            if hmac.compare_digest(candidate, given) and found is None:
                found = tenant
        if found is None:
            raise AuthError("unauthorized", "invalid token")
        return found


def owner(metadata: str) -> str | None:
    """The `auth_id` of a room's metadata, or None (no metadata, not a JSON object, no id)."""
    if not metadata:
        return None
    try:
        data = json.loads(metadata)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("auth_id"), str) and data["auth_id"]:
        return data["auth_id"]
    return None


def visible(tenant: str | None, metadata: str) -> bool:
    """May this caller see and touch a room with this metadata?"""
    return tenant is None or owner(metadata) == tenant


def tagged(tenant: str) -> str:
    """Metadata of a room created for a tenant."""
    return json.dumps({"auth_id": tenant}, separators=(",", ":"))


__all__ = ["AuthError", "Tenants", "owner", "tagged", "visible"]
