"""lkserver: a LiveKit-compatible realtime server written in Python."""

__version__ = "0.1.0"
