"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 2617; MD5, qop=auth or none).

The server side challenges (`challenge()`) and checks (`verify()`) an Authorization header;
the client side answers a WWW-/Proxy-Authenticate challenge (`authorization()`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

_PARAM = re.compile(r'(\w+)\s*=\s*("([^"]*)"|[^,\s]*)')


def _md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def parse_params(value: str) -> dict[str, str]:
    """Parameters of a `Digest k=v, k="v"` header value."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    return {m.group(1).lower(): (m.group(3) if m.group(3) is not None else m.group(2))
            for m in _PARAM.finditer(rest)}


class DigestServer:
    """Nonces are HMACs of a timestamp under a per-process key: stateless and expiring."""

    NONCE_TTL = 300.0

    def __init__(self, realm: str) -> None:
        self.realm = realm
        self._key = secrets.token_bytes(16)

    def _nonce(self, ts: int) -> str:
        mac = hmac.new(self._key, str(ts).encode(), hashlib.sha256).hexdigest()[:24]
        return f"{ts:x}.{mac}"

    def _nonce_ok(self, nonce: str) -> bool:
        ts_hex, _, _mac = nonce.partition(".")
        try:
            ts = int(ts_hex, 16)
        except ValueError:
            return False
        return hmac.compare_digest(self._nonce(ts), nonce) and time.time() - ts < self.NONCE_TTL

    def challenge(self, realm: str = "") -> str:
        return (f'Digest realm="{realm or self.realm}", nonce="{self._nonce(int(time.time()))}", '
                f'algorithm=MD5, qop="auth"')

    def verify(self, header: str, method: str, username: str, password: str, realm: str = "") -> bool:
        p = parse_params(header)
        if not p or p.get("username") != username or not self._nonce_ok(p.get("nonce", "")):
            return False
        if p.get("algorithm", "MD5").upper() != "MD5":
            return False
        ha1 = _md5(f"{username}:{p.get('realm', realm or self.realm)}:{password}")
        ha2 = _md5(f"{method}:{p.get('uri', '')}")
        if p.get("qop"):
            expected = _md5(f"{ha1}:{p['nonce']}:{p.get('nc', '')}:{p.get('cnonce', '')}:{p['qop']}:{ha2}")
        else:
            expected = _md5(f"{ha1}:{p['nonce']}:{ha2}")
        return hmac.compare_digest(expected, p.get("response", ""))


def authorization(challenge: str, method: str, uri: str, username: str, password: str,
                  nc: int = 1) -> str | None:
    """The Authorization value answering a challenge, or None if it is not a Digest MD5 one."""
    p = parse_params(challenge)
    if not p or p.get("algorithm", "MD5").upper() not in ("MD5",):
        return None
    realm, nonce = p.get("realm", ""), p.get("nonce", "")
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    qops = [q.strip() for q in p.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce, ncs = secrets.token_hex(8), f"{nc:08x}"
        resp = _md5(f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
        parts += [f'response="{resp}"', "qop=auth", f"nc={ncs}", f'cnonce="{cnonce}"']
    else:
        parts.append(f'response="{_md5(f"{ha1}:{nonce}:{ha2}")}"')
    parts.append("algorithm=MD5")
    if "opaque" in p:
        parts.append(f'opaque="{p["opaque"]}"')
    return "Digest " + ", ".join(parts)
