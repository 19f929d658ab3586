"""The HTTP shell on the main port: routing, CORS, body limits, token extraction. No logic.

Reproduces the middleware of LiveKit's server (livekit pkg/service/server.go, utils.go, auth.go;
reference server-api.md §1.1, §2.1): any Origin allowed, `//path` tolerated, bodies over
`limit.max_api_request_body_size` answered 413 in plain text, a token taken from
`Authorization: Bearer` or the `access_token` form value, and bad tokens answered 401 in plain
text before any handler runs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Awaitable, Callable, Mapping

from aiohttp import web

from ..auth import DEFAULT_LEEWAY, AuthError, Claims, verify_with_keys
from ..logs import get_logger
from ..services.context import RequestContext
from ..twirp import Encoding, TwirpError, TwirpRouter, decode_request, encode_error, encode_response, encoding_for
from ..twirp.errors import INTERNAL
from .metrics import Metrics

log = get_logger("lkserver.http")

RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

BEARER = "Bearer "
# the request path with a doubled leading slash removed (LiveKit's RemoveDoubleSlashes)
PATH = web.RequestKey("lkserver_path", str)
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "*",
}
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "OPTIONS, HEAD, GET, POST, PATCH, DELETE",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Max-Age": "86400",
}


def plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


class AuthFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def token_from(request: web.Request) -> str | None:
    """The bearer token of a request; raises AuthFailed for a malformed Authorization header."""
    # as Go's Header.Get: an empty header is no header; "Bearer " alone is no token (no grants)
    header = request.headers.get("Authorization")
    if header:
        if not header.startswith(BEARER):
            raise AuthFailed("invalid authorization header. Must start with " + BEARER)
        return header[len(BEARER):] or None
    token = request.query.get("access_token")
    return token or None


def authenticate(request: web.Request, keys: Mapping[str, str]) -> tuple[Claims | None, dict | None, str]:
    """(claims, raw payload, api key) of the request's token; (None, None, "") without one."""
    token = token_from(request)
    if token is None:
        return None, None, ""
    try:
        return verify_with_keys(token, keys)
    except AuthError as e:
        raise AuthFailed(str(e)) from None


Verified = tuple[Claims, dict, str]


class TokenCache:
    """Tokens this server verified, by their exact text: API clients reuse one token for many
    calls (the SDKs mint one per call, but scripts and dashboards keep theirs), so a repeat skips
    the HMAC, base64 and JSON work of `verify_with_keys`.

    Answers never differ from verifying every time: an entry is used only while the clock is inside
    the window verification checks (from max(nbf, iat) - leeway to exp + leeway), and outside it, or
    on a miss, the token is verified in full and gets the full error. The keys are fixed for the
    server's life, so what verified once stays verified. Only good tokens are kept (bad ones cannot
    push good ones out); the cache is a bounded LRU of `size` entries.
    """

    def __init__(self, keys: Mapping[str, str], size: int = 1024,
                 leeway: float = DEFAULT_LEEWAY.total_seconds(),
                 clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.size = size
        self.leeway = leeway
        self.clock = clock
        self._entries: OrderedDict[str, tuple[Verified, float, float]] = OrderedDict()

    def verify(self, token: str) -> Verified:
        """As `verify_with_keys(token, keys)`; raises AuthError the same way."""
        now = self.clock()
        entry = self._entries.get(token)
        if entry is not None:
            verified, not_before, expires = entry
            if not_before <= now < expires:
                self._entries.move_to_end(token)
                return verified
            del self._entries[token]
        verified = verify_with_keys(token, self.keys, self.leeway)
        payload = verified[1]
        # the same int() coercions as the claim checks (hs256.validate_claims) made a moment ago
        starts = [int(payload[k]) for k in ("nbf", "iat") if k in payload]
        not_before = max(starts) - self.leeway if starts else float("-inf")
        expires = int(payload["exp"]) + self.leeway
        self._entries[token] = (verified, not_before, expires)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return verified


class HttpApp:
    """Owns the aiohttp application: exact and prefix routes, and the Twirp endpoint."""

    def __init__(self, keys: Mapping[str, str], twirp: TwirpRouter, metrics: Metrics,
                 max_body: int, health: Callable[[], bool]) -> None:
        self.keys = keys
        self.tokens = TokenCache(keys)
        self.twirp = twirp
        self.metrics = metrics
        self.max_body = max_body
        self.health = health
        self.exact: dict[str, RouteHandler] = {"/": self.handle_health}
        self.prefixes: list[tuple[str, RouteHandler]] = [("/twirp/", self.handle_twirp)]
        self.app = web.Application(client_max_size=max_body, handler_args={"max_field_size": 65536})
        self.app.router.add_route("*", r"/{tail:[\s\S]*}", self.dispatch)

    def add_route(self, path: str, handler: RouteHandler) -> None:
        self.exact[path] = handler

    def add_prefix(self, prefix: str, handler: RouteHandler) -> None:
        self.prefixes.append((prefix, handler))

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("//"):
            path = path[1:]
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204, headers=PREFLIGHT_HEADERS)
        # LiveKit's body limiter runs before auth and routing: a declared oversize body is 413
        if request.content_length is not None and request.content_length > self.max_body:
            resp413 = plain(413, "request body too large")
            if "Origin" in request.headers:
                resp413.headers.update(CORS_HEADERS)
            return resp413
        handler = self.exact.get(path)
        if handler is None:
            for prefix, h in self.prefixes:
                if path.startswith(prefix):
                    handler = h
                    break
        if handler is None:
            resp: web.StreamResponse = plain(404, "404 page not found")
        else:
            request[PATH] = path
            resp = await handler(request)
        if "Origin" in request.headers and not resp.prepared:
            resp.headers.update(CORS_HEADERS)
        return resp

    def authenticate(self, request: web.Request) -> tuple[Claims | None, dict | None, str]:
        """`authenticate()` through this app's token cache."""
        token = token_from(request)
        if token is None:
            return None, None, ""
        try:
            return self.tokens.verify(token)
        except AuthError as e:
            raise AuthFailed(str(e)) from None

    async def handle_health(self, request: web.Request) -> web.StreamResponse:
        try:
            self.authenticate(request)
        except AuthFailed as e:
            return plain(401, e.message)
        if not self.health():
            return plain(406, "Not Ready")
        return plain(200, "OK")

    async def handle_twirp(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        path = request[PATH]
        if not self.twirp.owns(path):
            return plain(404, "404 page not found")
        try:
            claims, _, api_key = self.authenticate(request)
        except AuthFailed as e:
            self._observe_refused(request.method, path, started)
            return plain(401, e.message)
        service = method = "unknown"
        try:
            route = self.twirp.resolve(request.method, path)
            service, method = route.service, route.method
            encoding = encoding_for(request.headers.get("Content-Type"), f"{request.method} {path}")
            try:
                # a declared oversize body was refused in dispatch(); aiohttp's client_max_size
                # bounds a chunked one
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return plain(413, "request body too large")
            req = decode_request(body, route.input_type, encoding)
            ctx = RequestContext(claims=claims, api_key=api_key, headers=request.headers)
            result = await route.handler(ctx, req)
            payload = encode_response(result, encoding)
            code = "ok"
            resp = web.Response(body=payload, content_type=encoding.value)
        except TwirpError as e:
            code = e.code
            resp = twirp_error_response(e)
        except Exception:
            log.exception("twirp_handler_failed", service=service, method=method)
            err = TwirpError(INTERNAL, "internal error")
            code = err.code
            resp = twirp_error_response(err)
        self.metrics.observe_twirp(service, method, code, time.perf_counter() - started)
        return resp

    def _observe_refused(self, http_method: str, path: str, started: float) -> None:
        """A request refused for its token counts too (code unauthenticated)."""
        try:
            route = self.twirp.resolve(http_method, path)
            service, method = route.service, route.method
        except TwirpError:
            service = method = "unknown"
        self.metrics.observe_twirp(service, method, "unauthenticated", time.perf_counter() - started)


def twirp_error_response(err: TwirpError) -> web.Response:
    # exactly `application/json`: the Node SDK reads the error only with that content type
    resp = web.Response(status=err.status, body=encode_error(err))
    resp.headers["Content-Type"] = "application/json"
    return resp


__all__ = ["AuthFailed", "Encoding", "HttpApp", "TokenCache", "authenticate", "plain", "token_from"]
