"""WebhookReceiver: check and parse the webhooks a LiveKit (or lkserver) server posts.

A webhook is `POST <your url>` with the body the protojson of a `WebhookEvent` and the header
`Authorization: <JWT>` (no `Bearer `) signed with an API key of the server, whose `sha256` claim
is the base64 SHA-256 of the exact body bytes (reference server-api.md §5.2). `receive()` verifies
the token, then the body's hash against the claim, then parses the body, ignoring unknown fields
(newer servers add them). Drop-in for the official `livekit.api.WebhookReceiver`.

```python
import jwt
from aiohttp import web
from lkserver import api

receiver = api.WebhookReceiver(api.TokenVerifier("devkey", "secret"))

async def livekit_webhook(request: web.Request) -> web.Response:
    try:
        event = receiver.receive(await request.read(), request.headers.get("Authorization", ""))
    except (jwt.InvalidTokenError, api.WebhookError):  # forged, altered or malformed
        return web.Response(status=401)
    print(event.event, event.room.name)
    return web.Response()
```
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from google.protobuf.json_format import ParseDict, ParseError
from livekit.protocol.webhook import WebhookEvent

from ..auth import TokenVerifier

BEARER = "Bearer "


class WebhookError(Exception):
    """The body does not match the token that signs it."""


class MissingSha256Error(WebhookError):
    """The token has no `sha256` claim, so it does not sign any body."""


class HashMismatchError(WebhookError):
    """The body's SHA-256 is not the token's `sha256` claim: the body was altered."""


class WebhookParseError(WebhookError, ParseError):
    """The signed body is not a WebhookEvent (also a protobuf ParseError, as the official raises)."""


class WebhookReceiver:
    """Verifies and parses webhook requests; `receive(body, auth_token) -> WebhookEvent`."""

    def __init__(self, token_verifier: TokenVerifier) -> None:
        self._verifier = token_verifier

    def receive(self, body: str | bytes, auth_token: str) -> WebhookEvent:
        """The event of a genuine webhook request.

        `body` is the request body exactly as received (bytes, or str which is hashed as UTF-8);
        `auth_token` the Authorization header (a `Bearer ` prefix is tolerated). Raises
        `jwt.InvalidTokenError` (from the verifier) for a bad token, and a WebhookError for a bad
        body: MissingSha256Error when the token signs no body, HashMismatchError when the body
        is not the signed one, WebhookParseError (a protobuf ParseError) when it is not a
        WebhookEvent.
        """
        auth_token = auth_token.removeprefix(BEARER)
        claims = self._verifier.verify(auth_token)
        if not claims.sha256:
            raise MissingSha256Error("sha256 was not found in the token")
        raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        try:
            claimed = base64.b64decode(claims.sha256, validate=True)
        except (binascii.Error, ValueError):
            raise HashMismatchError("hash mismatch: the token's sha256 claim is not base64") from None
        if not hmac.compare_digest(hashlib.sha256(raw).digest(), claimed):
            raise HashMismatchError("hash mismatch")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise WebhookParseError(f"Failed to load JSON: {e}.") from None
        if not isinstance(doc, dict):
            # protobuf's Parse would turn `[]` into an empty event
            raise WebhookParseError("webhook body is not a JSON object")
        try:
            return ParseDict(doc, WebhookEvent(), ignore_unknown_fields=True)
        except ParseError as e:
            raise WebhookParseError(str(e)) from None
