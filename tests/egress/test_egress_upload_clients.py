"""The upload clients against local HTTP servers that check each request the way the provider
documents it: GCP (service-account JWT grant, then a media upload with the bearer token), AliOSS
(PutObject with the V1 signature), and retries after server errors (Azure Put Blob)."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lkserver.egress.storage import (
    AliOSSStorage,
    AzureStorage,
    GCPStorage,
    UploadError,
    open_storage,
)


class Recorder:
    def __init__(self, answer: Callable[[str, str, dict, bytes], tuple[int, bytes]]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, str, dict, bytes]] = []


@pytest.fixture
def http() -> Iterator[Callable[[Callable], tuple[str, Recorder]]]:
    servers = []

    def start(answer: Callable) -> tuple[str, Recorder]:
        rec = Recorder(answer)

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                rec.requests.append((self.command, self.path, headers, body))
                status, out = rec.answer(self.command, self.path, headers, body)
                self.send_response(status)
                self.send_header("Content-Length", str(len(out)))
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(out)

            do_PUT = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}", rec

    yield start
    for s in servers:
        s.shutdown()


def test_gcp_service_account_upload(http, tmp_path: Path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    base, rec = http(lambda method, path, h, body: (200, json.dumps(
        {"access_token": "ya29.token", "expires_in": 3600} if path == "/token" else {"name": "x"}).encode()))
    creds = {"type": "service_account", "client_email": "egress@proj.iam.gserviceaccount.com",
             "private_key": pem, "token_uri": f"{base}/token"}
    f = tmp_path / "a.mp4"
    f.write_bytes(b"\x00\x00\x00\x18ftypmp42" * 10)
    storage = open_storage({"gcp": {"credentials": json.dumps(creds), "bucket": "my-bucket"}}, str(tmp_path),
                           {"gcp": base})
    assert isinstance(storage, GCPStorage)
    location = storage.upload(str(f), "rooms/a b.mp4")
    assert location == "https://storage.googleapis.com/my-bucket/rooms/a%20b.mp4"
    (m1, p1, h1, b1), (m2, p2, h2, b2) = rec.requests
    form = urllib.parse.parse_qs(b1.decode())
    assert (m1, p1) == ("POST", "/token") and form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    claims = jwt.decode(form["assertion"][0], key.public_key(), algorithms=["RS256"], audience=f"{base}/token")
    assert claims["iss"] == creds["client_email"] and "devstorage.read_write" in claims["scope"]
    assert m2 == "POST" and h2["authorization"] == "Bearer ya29.token" and h2["content-type"] == "video/mp4"
    assert p2 == "/upload/storage/v1/b/my-bucket/o?uploadType=media&name=rooms%2Fa%20b.mp4" and b2 == f.read_bytes()
    storage.upload(str(f), "again.mp4")
    assert len(rec.requests) == 3  # the token is reused


def test_alioss_signed_put(http, tmp_path: Path):
    base, rec = http(lambda method, path, h, body: (200, b""))
    f = tmp_path / "seg.ts"
    f.write_bytes(b"G" * 188 * 4)
    storage = open_storage({"aliOSS": {"access_key": "LTAIkey", "secret": "oss-secret", "bucket": "rec",
                                       "region": "cn-shanghai"}}, str(tmp_path), {"alioss": base + "/{bucket}"})
    assert isinstance(storage, AliOSSStorage)
    assert AliOSSStorage({"bucket": "rec", "region": "cn-shanghai"}).base == "https://rec.oss-cn-shanghai.aliyuncs.com"
    assert storage.upload(str(f), "hls/seg.ts") == f"{base}/rec/hls/seg.ts"
    method, path, h, body = rec.requests[0]
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    assert method == "PUT" and path == "/rec/hls/seg.ts" and h["content-md5"] == md5
    # Signature = base64(hmac-sha1(secret, VERB\nContent-MD5\nContent-Type\nDate\nCanonicalizedResource))
    to_sign = f"PUT\n{md5}\nvideo/mp2t\n{h['date']}\n/rec/hls/seg.ts"
    sig = base64.b64encode(hmac.new(b"oss-secret", to_sign.encode(), hashlib.sha1).digest()).decode()
    assert h["authorization"] == f"OSS LTAIkey:{sig}"
    assert email.utils.parsedate_to_datetime(h["date"]).tzinfo is not None


def test_uploads_are_retried_then_fail_with_the_provider_name(http, tmp_path: Path):
    answers = iter([500, 503, 201])
    base, rec = http(lambda method, path, h, body: (next(answers, 201), b""))
    f = tmp_path / "x.ogg"
    f.write_bytes(b"OggS" * 100)
    key = base64.b64encode(b"k" * 64).decode()
    storage = open_storage({"azure": {"account_name": "acct", "account_key": key, "container_name": "c"}},
                           str(tmp_path), {"azure": base + "/{account_name}"})
    assert isinstance(storage, AzureStorage)
    assert storage.upload(str(f), "x.ogg") == f"{base}/acct/c/x.ogg"
    assert [r[0] for r in rec.requests] == ["PUT"] * 3 and rec.requests[-1][2]["x-ms-blob-type"] == "BlockBlob"
    # a 403 is the destination's answer: no retry, and the error names the provider
    base, rec = http(lambda method, path, h, body: (403, b"AuthenticationFailed"))
    storage = open_storage({"azure": {"account_name": "acct", "account_key": key, "container_name": "c"}},
                           str(tmp_path), {"azure": base + "/{account_name}"})
    with pytest.raises(UploadError) as e:
        storage.upload(str(f), "x.ogg")
    assert str(e.value).startswith("Azure upload failed: 403") and len(rec.requests) == 1


def test_local_storage_stays_inside_its_directory(tmp_path: Path):
    f = tmp_path / "src.mp4"
    f.write_bytes(b"data")
    storage = open_storage({}, str(tmp_path / "out"))
    assert storage.upload(str(f), "a/b.mp4") == str(tmp_path / "out" / "a" / "b.mp4")
    with pytest.raises(UploadError):
        storage.upload(str(f), "../../escape.mp4")
