"""Twirp routing (sans-I/O): `/twirp/livekit.<Service>/<Method>` to a handler and message types.

Services are mounted from their protobuf service descriptors (livekit-protocol), so request and
response types always match the wire. A handler object provides one coroutine per RPC, named in
snake_case (`CreateRoom` -> `create_room`). Route errors follow twitchtv/twirp's generated server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from .codec import go_quote
from .errors import BAD_ROUTE, TwirpError

PREFIX = "/twirp"
PACKAGE = "livekit"

Handler = Callable[[Any, Message], Awaitable[Message]]


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class Route:
    service: str  # e.g. "RoomService"
    method: str  # e.g. "CreateRoom"
    input_type: type[Message]
    output_type: type[Message]
    handler: Handler


def _bad_route(msg: str, http_method: str, path: str) -> TwirpError:
    return TwirpError(BAD_ROUTE, msg, {"twirp_invalid_route": f"{http_method} {path}"})


class TwirpRouter:
    def __init__(self) -> None:
        self._services: dict[str, dict[str, Route]] = {}
        # every served path, for the one-lookup fast path of a well-formed request
        self._paths: dict[str, Route] = {}

    def mount(self, service: ServiceDescriptor, handler_obj: object) -> None:
        """Serve every RPC of `service` that `handler_obj` implements."""
        routes: dict[str, Route] = {}
        for m in service.methods:
            fn = getattr(handler_obj, snake_case(m.name), None)
            if fn is None:
                continue
            routes[m.name] = Route(
                service=service.name,
                method=m.name,
                input_type=GetMessageClass(m.input_type),
                output_type=GetMessageClass(m.output_type),
                handler=fn,
            )
        self._services[f"{PACKAGE}.{service.name}"] = routes
        for name, route in routes.items():
            self._paths[f"{PREFIX}/{PACKAGE}.{service.name}/{name}"] = route

    def services(self) -> list[str]:
        return list(self._services)

    def routes(self, service: str) -> dict[str, Route]:
        return self._services[f"{PACKAGE}.{service}"]

    def owns(self, path: str) -> bool:
        """Whether a path falls under a mounted service (else it is a plain 404)."""
        if path in self._paths:
            return True
        parts = path.split("/")
        return len(parts) >= 3 and parts[1] == PREFIX[1:] and parts[2] in self._services

    def resolve(self, http_method: str, path: str) -> Route:
        if http_method == "POST":
            route = self._paths.get(path)
            if route is not None:
                return route
        # twirp's generated ServeHTTP checks the HTTP method first, then the path
        if http_method != "POST":
            raise _bad_route(f"unsupported method {go_quote(http_method)} (only POST is allowed)",
                             http_method, path)
        parts = path.split("/")
        # ["", "twirp", "livekit.RoomService", "CreateRoom"]
        route = None
        if len(parts) == 4 and parts[1] == PREFIX[1:]:
            routes = self._services.get(parts[2])
            route = routes.get(parts[3]) if routes is not None else None
        if route is None:
            raise _bad_route(f"no handler for path {go_quote(path)}", http_method, path)
        return route
