"""HS256 JSON Web Tokens (RFC 7519 over the RFC 7515 compact form): sign, parse, verify, validate.

Sans-I/O and dependency-light: hmac + base64 + json from the standard library. It reproduces
what PyJWT 2.x does for `jwt.encode(payload, secret, algorithm="HS256")` and for
`jwt.decode(token, secret, issuer=..., algorithms=["HS256"], leeway=..., options=...)`, which
is what the official `livekit-api` uses, so that:

- a signed token is byte-for-byte PyJWT's (header `{"alg":"HS256","typ":"JWT"}`, compact JSON,
  unpadded base64url);
- every rejection raises the same PyJWT exception class with the same message (`DecodeError`,
  `InvalidSignatureError`, `ExpiredSignatureError`, `InvalidIssuerError`, ...), so code that
  catches `jwt.InvalidTokenError` keeps working.

It exists because it is 3-4x faster than going through PyJWT's generic multi-algorithm path
(benchmarks/bench_tokens.py). Differences from PyJWT: no `InsecureKeyLengthWarning` for short
secrets, and only HS256 (any other `alg` is rejected, as `algorithms=["HS256"]` does).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any

from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidJTIError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidSubjectError,
    InvalidTokenError,
    MissingRequiredClaimError,
)
from jwt.utils import is_pem_format, is_ssh_key

ALGORITHM = "HS256"
# base64url('{"alg":"HS256","typ":"JWT"}'): the header PyJWT (and so every Python LiveKit SDK) writes
STANDARD_HEADER_SEGMENT = b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
_STANDARD_HEADER = {"alg": "HS256", "typ": "JWT"}
_BASE64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SUPPORTED_CRIT = frozenset({"b64"})
_sha256 = hashlib.sha256


def hmac_key(secret: str | bytes) -> bytes:
    """The HMAC key for a secret; refuses PEM/SSH material, as PyJWT's HMAC algorithm does."""
    if isinstance(secret, str):
        key = secret.encode("utf-8")
    elif isinstance(secret, bytes):
        key = secret
    else:
        raise TypeError("Expected a string value")
    if is_pem_format(key) or is_ssh_key(key):
        raise InvalidKeyError(
            "The specified key is an asymmetric key or x509 certificate and"
            " should not be used as an HMAC secret."
        )
    return key


def _b64encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sign(payload: dict[str, Any], key: bytes) -> str:
    """The compact JWS of `payload` (a JSON object) signed with HMAC-SHA256 under `key`.

    Identical to `jwt.encode(payload, key, algorithm="HS256")` for payloads without datetime values.
    """
    signing_input = STANDARD_HEADER_SEGMENT + b"." + _b64encode(
        json.dumps(payload, separators=(",", ":")).encode("utf-8"))
    signature = hmac.new(key, signing_input, _sha256).digest()
    return (signing_input + b"." + _b64encode(signature)).decode("ascii")


def _b64decode_segment(segment: bytes, name: str) -> bytes:
    # PyJWT's rules (GHSA-hxm8-2xgr-2p9m): at most two '=' and only on a 4-aligned segment,
    # nothing outside the base64url alphabet, and the canonical encoding of what it decodes to.
    stripped = segment.rstrip(b"=")
    padding = len(segment) - len(stripped)
    if padding > 2 or (padding and len(segment) % 4):
        raise DecodeError(f"Invalid {name} padding")
    if len(stripped) % 4 == 1 or stripped.translate(None, _BASE64URL_ALPHABET):
        raise DecodeError(f"Invalid {name} padding")
    try:
        decoded = base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
    except (TypeError, binascii.Error) as err:
        raise DecodeError(f"Invalid {name} padding") from err
    if _b64encode(decoded) != stripped:
        raise DecodeError(f"Invalid {name} padding")
    return decoded


class ParsedToken:
    """A compact JWS split and decoded, signature not yet checked."""

    __slots__ = ("header", "payload_bytes", "signature", "signing_input")

    def __init__(self, header: dict[str, Any], payload_bytes: bytes, signing_input: bytes,
                 signature: bytes) -> None:
        self.header = header
        self.payload_bytes = payload_bytes
        self.signing_input = signing_input
        self.signature = signature

    def payload(self) -> dict[str, Any]:
        """The claims object; DecodeError when it is not a JSON object."""
        try:
            payload = json.loads(self.payload_bytes)
        except (ValueError, RecursionError) as e:
            raise DecodeError(f"Invalid payload string: {e}") from e
        if not isinstance(payload, dict):
            raise DecodeError("Invalid payload string: must be a json object")
        return payload

    def verify_signature(self, key: bytes) -> None:
        """Raises unless the header names HS256 and the signature is HMAC-SHA256(key)."""
        try:
            alg = self.header["alg"]
        except KeyError:
            raise InvalidAlgorithmError("Algorithm not specified") from None
        if alg != ALGORITHM:
            raise InvalidAlgorithmError("The specified alg value is not allowed")
        expected = hmac.new(key, self.signing_input, _sha256).digest()
        if not hmac.compare_digest(expected, self.signature):
            raise InvalidSignatureError("Signature verification failed")


def parse(token: str | bytes) -> ParsedToken:
    """Split and decode a compact JWS; DecodeError/InvalidTokenError when it is malformed."""
    if isinstance(token, str):
        token = token.encode("utf-8")
    if not isinstance(token, bytes):
        raise DecodeError(f"Invalid token type. Token must be a {bytes}")
    try:
        signing_input, crypto_segment = token.rsplit(b".", 1)
        header_segment, payload_segment = signing_input.split(b".", 1)
    except ValueError as err:
        raise DecodeError("Not enough segments") from err

    if header_segment == STANDARD_HEADER_SEGMENT:
        header: Any = dict(_STANDARD_HEADER)
    else:
        header_data = _b64decode_segment(header_segment, "header")
        try:
            header = json.loads(header_data)
        except (ValueError, RecursionError) as e:
            raise DecodeError(f"Invalid header string: {e}") from e
        if not isinstance(header, dict):
            raise DecodeError("Invalid header string: must be a json object")
        if header.get("b64", True) is False:
            # an unencoded (detached) payload is never a LiveKit token
            if payload_segment:
                raise DecodeError("Payload segment must be empty when 'b64' is false.")
            _b64decode_segment(crypto_segment, "crypto")
            _validate_header(header)
            crit = header.get("crit") or []
            if not isinstance(crit, list) or "b64" not in crit:
                raise InvalidTokenError(
                    "The 'b64' header parameter requires 'b64' to be listed in 'crit'.")
            raise DecodeError('It is required that you pass in a value for the "detached_payload"'
                              " argument to decode a message having the b64 header set to false.")
    payload_bytes = _b64decode_segment(payload_segment, "payload")
    signature = _b64decode_segment(crypto_segment, "crypto")
    _validate_header(header)
    return ParsedToken(header, payload_bytes, signing_input, signature)


def _validate_header(header: dict[str, Any]) -> None:
    if "kid" in header and not isinstance(header["kid"], str):
        raise InvalidTokenError("Key ID header parameter must be a string")
    if "crit" in header:
        crit = header["crit"]
        if not isinstance(crit, list) or len(crit) == 0:
            raise InvalidTokenError("Invalid 'crit' header: must be a non-empty list")
        for ext in crit:
            if not isinstance(ext, str):
                raise InvalidTokenError("Invalid 'crit' header: values must be strings")
            if ext not in _SUPPORTED_CRIT:
                raise InvalidTokenError(f"Unsupported critical extension: {ext}")
            if ext not in header:
                raise InvalidTokenError(f"Critical extension '{ext}' is missing from headers")


def validate_claims(payload: dict[str, Any], *, issuer: str | None, leeway: float,
                    require_exp: bool = True, now: float | None = None) -> None:
    """PyJWT's registered-claim checks, in its order: exp present, iat, nbf, exp, iss, aud, sub, jti."""
    if require_exp and payload.get("exp") is None:
        raise MissingRequiredClaimError("exp")
    if now is None:
        now = time.time()
    if "iat" in payload:
        try:
            iat = int(payload["iat"])
        except (ValueError, TypeError, OverflowError):
            raise InvalidIssuedAtError("Issued At claim (iat) must be an integer.") from None
        if iat > now + leeway:
            raise ImmatureSignatureError("The token is not yet valid (iat)")
    if "nbf" in payload:
        try:
            nbf = int(payload["nbf"])
        except (ValueError, TypeError, OverflowError):
            raise DecodeError("Not Before claim (nbf) must be an integer.") from None
        if nbf > now + leeway:
            raise ImmatureSignatureError("The token is not yet valid (nbf)")
    if "exp" in payload:
        try:
            exp = int(payload["exp"])
        except (ValueError, TypeError, OverflowError):
            raise DecodeError("Expiration Time claim (exp) must be an integer.") from None
        if exp <= now - leeway:
            raise ExpiredSignatureError("Signature has expired")
    if issuer is not None:
        if "iss" not in payload:
            raise MissingRequiredClaimError("iss")
        iss = payload["iss"]
        if not isinstance(iss, str):
            raise InvalidIssuerError("Payload Issuer (iss) must be a string")
        if iss != issuer:
            raise InvalidIssuerError("Invalid issuer")
    # no audience is expected: a token that names one is refused, as PyJWT does
    if payload.get("aud"):
        raise InvalidAudienceError("Invalid audience")
    if "sub" in payload and not isinstance(payload["sub"], str):
        raise InvalidSubjectError("Subject must be a string")
    if "jti" in payload and not isinstance(payload["jti"], str):
        raise InvalidJTIError("JWT ID must be a string")


def decode(token: str | bytes, key: bytes, *, issuer: str | None, leeway: float,
           require_exp: bool = True) -> dict[str, Any]:
    """The verified claims of an HS256 token: signature, then registered claims."""
    parsed = parse(token)
    parsed.verify_signature(key)
    payload = parsed.payload()
    validate_claims(payload, issuer=issuer, leeway=leeway, require_exp=require_exp)
    return payload


def decode_unverified(token: str | bytes) -> dict[str, Any]:
    """The claims without any check (`verify_signature=False`): for inspection only."""
    return parse(token).payload()
