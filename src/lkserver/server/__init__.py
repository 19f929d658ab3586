"""The HTTP and WebSocket shell on the main port, and the Server object that owns every part."""

from .app import Server

__all__ = ["Server"]
