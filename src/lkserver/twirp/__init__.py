"""The Twirp transport LiveKit's APIs use: codec, errors and routing, free of I/O."""

from .codec import Encoding, decode_request, encode_error, encode_response, encoding_for
from .errors import TwirpError
from .server import Route, TwirpRouter

__all__ = ["Encoding", "Route", "TwirpError", "TwirpRouter", "decode_request", "encode_error",
           "encode_response", "encoding_for"]
