"""The tenant REST gateway (`/livekit/...`) and the OpenAPI document of lkserver's REST routes."""

from .openapi import handle_openapi
from .routes import PREFIX, Gateway

__all__ = ["PREFIX", "Gateway", "handle_openapi"]
