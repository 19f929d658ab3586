"""The SDK's version: lkserver's own (the official module has `livekit.api.version`)."""

from .. import __version__

__all__ = ["__version__"]
