"""Where egress outputs go: the local directory (default), S3, Azure Blob, GCP Cloud Storage, AliOSS.

Runs in the egress worker process, in its upload threads (blocking I/O is fine there). Follows
LiveKit egress's uploader (pkg/pipeline/sink/uploader): each upload is retried (5 attempts,
back-off 100 ms doubling to 5 s), errors read `<Provider> upload failed: <reason>`, and the
returned location is the object's URL (or the local path). S3 goes through boto3; Azure
(Put Blob, SharedKey), GCP (JSON API media upload with a service-account OAuth token) and
AliOSS (PutObject, OSS signature v1) are plain HTTPS requests written against their documented
REST APIs.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import hmac
import json
import mimetypes
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

RETRIES = 5
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0

CONTENT_TYPES = {".mp4": "video/mp4", ".ogg": "audio/ogg", ".webm": "video/webm", ".ts": "video/mp2t",
                 ".m3u8": "application/x-mpegurl", ".jpeg": "image/jpeg", ".json": "application/json",
                 ".mp3": "audio/mpeg", ".raw": "application/octet-stream"}


class UploadError(Exception):
    pass


def content_type(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return CONTENT_TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


class Storage:
    """One destination. `upload(local, key)` returns the location; raises UploadError."""

    provider = "Local"

    def upload(self, local_path: str, key: str) -> str:
        delay = BACKOFF_MIN
        last: Exception | None = None
        for attempt in range(RETRIES):
            try:
                return self._put(local_path, key.lstrip("/"), content_type(key))
            except Exception as e:  # noqa: BLE001 - every failure is retried, then reported
                last = e
                if attempt + 1 < RETRIES and not _permanent(e):
                    time.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                else:
                    break
        raise UploadError(f"{self.provider} upload failed: {_describe(last)}")

    def _put(self, local_path: str, key: str, ctype: str) -> str:
        raise NotImplementedError


def _permanent(e: Exception) -> bool:
    """4xx answers (other than 408/429) are the destination's verdict: retrying cannot help."""
    if isinstance(e, UploadError):  # refused before any request (a path leaving the directory)
        return True
    code = e.code if isinstance(e, urllib.error.HTTPError) else None
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):  # botocore ClientError
        code = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return isinstance(code, int) and 400 <= code < 500 and code not in (408, 429)


def _describe(e: Exception | None) -> str:
    if isinstance(e, urllib.error.HTTPError):
        try:
            body = e.read().decode(errors="replace")[:300]
        except Exception:  # noqa: BLE001
            body = ""
        return f"{e.code} {e.reason}" + (f": {body}" if body else "")
    return str(e) if e else "unknown error"


class LocalStorage(Storage):
    provider = "Local"

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def _put(self, local_path: str, key: str, ctype: str) -> str:
        dest = os.path.abspath(os.path.join(self.root, key))
        if not dest.startswith(self.root + os.sep):
            raise UploadError(f"path {key!r} leaves the output directory")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.abspath(local_path) != dest:
            tmp = dest + ".part"
            shutil.copyfile(local_path, tmp)
            os.replace(tmp, dest)
        return dest


class S3Storage(Storage):
    provider = "S3"

    def __init__(self, conf: dict) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.conf = conf
        self.bucket = conf.get("bucket", "")
        proxies = None
        proxy = conf.get("proxy") or {}
        if proxy.get("url"):
            url = proxy["url"]
            if proxy.get("username"):
                u = urllib.parse.urlsplit(url)
                cred = f"{urllib.parse.quote(proxy['username'])}:{urllib.parse.quote(proxy.get('password', ''))}@"
                url = urllib.parse.urlunsplit((u.scheme, cred + u.netloc, u.path, u.query, u.fragment))
            proxies = {"http": url, "https": url}
        cfg = BotoConfig(s3={"addressing_style": "path" if conf.get("force_path_style") else "auto"},
                         proxies=proxies, retries={"max_attempts": 1})
        session = boto3.session.Session(
            aws_access_key_id=conf.get("access_key") or None,
            aws_secret_access_key=conf.get("secret") or None,
            aws_session_token=conf.get("session_token") or None,
            region_name=conf.get("region") or "us-east-1")
        if conf.get("assume_role_arn"):
            sts = session.client("sts", endpoint_url=conf.get("endpoint") or None, config=cfg)
            args = {"RoleArn": conf["assume_role_arn"], "RoleSessionName": "lkserver-egress"}
            if conf.get("assume_role_external_id"):
                args["ExternalId"] = conf["assume_role_external_id"]
            c = sts.assume_role(**args)["Credentials"]
            session = boto3.session.Session(aws_access_key_id=c["AccessKeyId"],
                                            aws_secret_access_key=c["SecretAccessKey"],
                                            aws_session_token=c["SessionToken"],
                                            region_name=conf.get("region") or "us-east-1")
        self.client = session.client("s3", endpoint_url=conf.get("endpoint") or None, config=cfg)

    def _put(self, local_path: str, key: str, ctype: str) -> str:
        extra: dict[str, Any] = {"ContentType": ctype}
        if self.conf.get("metadata"):
            extra["Metadata"] = dict(self.conf["metadata"])
        if self.conf.get("tagging"):
            extra["Tagging"] = self.conf["tagging"]
        if self.conf.get("content_disposition"):
            extra["ContentDisposition"] = self.conf["content_disposition"]
        with open(local_path, "rb") as f:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=f, **extra)
        endpoint = self.conf.get("endpoint")
        quoted = urllib.parse.quote(key)
        if endpoint:
            return f"{endpoint.rstrip('/')}/{self.bucket}/{quoted}"
        region = self.conf.get("region") or "us-east-1"
        return f"https://{self.bucket}.s3.{region}.amazonaws.com/{quoted}"


def _http_put(url: str, body: bytes, headers: dict[str, str], proxy: dict | None = None,
              timeout: float = 60.0) -> None:
    handlers: list[Any] = []
    if proxy and proxy.get("url"):
        handlers.append(urllib.request.ProxyHandler({"http": proxy["url"], "https": proxy["url"]}))
        if proxy.get("username"):
            mgr = urllib.request.HTTPPasswordMgrWithDefaultRealm()
            mgr.add_password(None, proxy["url"], proxy["username"], proxy.get("password", ""))
            handlers.append(urllib.request.ProxyBasicAuthHandler(mgr))
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, data=body, method="PUT", headers=headers)
    with opener.open(req, timeout=timeout) as resp:
        resp.read()


class AzureStorage(Storage):
    """Put Blob (BlockBlob) with Shared Key authorization (Azure Storage REST API)."""

    provider = "Azure"
    VERSION = "2021-08-06"

    def __init__(self, conf: dict, endpoint: str = "") -> None:
        self.account = conf.get("account_name", "")
        self.key = base64.b64decode(conf.get("account_key", "") or "")
        self.container = conf.get("container_name", "")
        # default endpoint, or e.g. Azurite's http://127.0.0.1:10000/{account_name}
        self.endpoint = (endpoint or "https://{account_name}.blob.core.windows.net").replace(
            "{account_name}", self.account).rstrip("/")

    def _put(self, local_path: str, key: str, ctype: str) -> str:
        with open(local_path, "rb") as f:
            body = f.read()
        url = f"{self.endpoint}/{self.container}/{urllib.parse.quote(key)}"
        date = email.utils.formatdate(usegmt=True)
        ms = {"x-ms-blob-type": "BlockBlob", "x-ms-date": date, "x-ms-version": self.VERSION}
        path = urllib.parse.urlsplit(url).path
        # the emulator's path-style URL repeats the account: /acct/acct/container/blob, as documented
        canonical_resource = f"/{self.account}{path}"
        string_to_sign = "\n".join([
            "PUT", "", "", str(len(body)) if body else "", "", ctype, "", "", "", "", "", "",
            *[f"{k}:{v}" for k, v in sorted(ms.items())], canonical_resource])
        sig = base64.b64encode(hmac.new(self.key, string_to_sign.encode(), hashlib.sha256).digest()).decode()
        headers = {**ms, "Content-Type": ctype, "Content-Length": str(len(body)),
                   "Authorization": f"SharedKey {self.account}:{sig}"}
        _http_put(url, body, headers)
        return url


class GCPStorage(Storage):
    """Cloud Storage JSON API media upload; a service-account key signs an OAuth 2.0 JWT grant."""

    provider = "GCP"

    def __init__(self, conf: dict, endpoint: str = "") -> None:
        self.bucket = conf.get("bucket", "")
        self.proxy = conf.get("proxy") or None
        self.credentials = json.loads(conf["credentials"]) if conf.get("credentials") else {}
        self.endpoint = (endpoint or "https://storage.googleapis.com").rstrip("/")
        self._token: tuple[str, float] | None = None

    def _access_token(self) -> str:
        if self._token and self._token[1] > time.time() + 60:
            return self._token[0]
        import jwt  # PyJWT; RS256 needs `cryptography`, which aiortc already brings

        creds = self.credentials
        token_uri = creds.get("token_uri", "https://oauth2.googleapis.com/token")
        now = int(time.time())
        assertion = jwt.encode({"iss": creds.get("client_email", ""),
                                "scope": "https://www.googleapis.com/auth/devstorage.read_write",
                                "aud": token_uri, "iat": now, "exp": now + 3600},
                               creds.get("private_key", ""), algorithm="RS256")
        body = urllib.parse.urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                       "assertion": assertion}).encode()
        req = urllib.request.Request(token_uri, data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = json.loads(resp.read())
        self._token = (data["access_token"], time.time() + float(data.get("expires_in", 3600)))
        return self._token[0]

    def _put(self, local_path: str, key: str, ctype: str) -> str:
        with open(local_path, "rb") as f:
            body = f.read()
        url = (f"{self.endpoint}/upload/storage/v1/b/{urllib.parse.quote(self.bucket)}/o?uploadType=media&name="
               f"{urllib.parse.quote(key, safe='')}")
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": ctype, "Authorization": f"Bearer {self._access_token()}"})
        handlers = [urllib.request.ProxyHandler({"https": self.proxy["url"], "http": self.proxy["url"]})] \
            if self.proxy and self.proxy.get("url") else []
        with urllib.request.build_opener(*handlers).open(req, timeout=60) as resp:
            resp.read()
        return f"https://storage.googleapis.com/{self.bucket}/{urllib.parse.quote(key)}"


class AliOSSStorage(Storage):
    """OSS PutObject with the V1 signature (HMAC-SHA1 over verb, MD5, type, date, resource)."""

    provider = "AliOSS"

    def __init__(self, conf: dict, base: str = "") -> None:
        self.access_key = conf.get("access_key", "")
        self.secret = conf.get("secret", "")
        self.bucket = conf.get("bucket", "")
        endpoint = conf.get("endpoint") or f"oss-{conf.get('region', 'cn-hangzhou')}.aliyuncs.com"
        if "://" not in endpoint:
            endpoint = "https://" + endpoint
        u = urllib.parse.urlsplit(endpoint)
        # virtual-hosted style, or an override such as "http://127.0.0.1:9000/{bucket}" (emulators)
        self.base = base.replace("{bucket}", self.bucket).rstrip("/") if base else f"{u.scheme}://{self.bucket}.{u.netloc}"

    def _put(self, local_path: str, key: str, ctype: str) -> str:
        with open(local_path, "rb") as f:
            body = f.read()
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        date = email.utils.formatdate(usegmt=True)
        resource = f"/{self.bucket}/{key}"
        to_sign = f"PUT\n{md5}\n{ctype}\n{date}\n{resource}"
        sig = base64.b64encode(hmac.new(self.secret.encode(), to_sign.encode(), hashlib.sha1).digest()).decode()
        url = f"{self.base}/{urllib.parse.quote(key)}"
        _http_put(url, body, {"Content-MD5": md5, "Content-Type": ctype, "Date": date,
                              "Authorization": f"OSS {self.access_key}:{sig}"})
        return url


def open_storage(storage: dict, output_dir: str, endpoints: dict | None = None) -> Storage:
    """The Storage a plan's output names ({"s3": {...}} ...), or the local output directory."""
    endpoints = endpoints or {}
    if "s3" in storage:
        return S3Storage(storage["s3"])
    if "azure" in storage:
        return AzureStorage(storage["azure"], endpoints.get("azure", ""))
    if "gcp" in storage:
        return GCPStorage(storage["gcp"], endpoints.get("gcp", ""))
    if "aliOSS" in storage:
        return AliOSSStorage(storage["aliOSS"], endpoints.get("alioss", ""))
    return LocalStorage(output_dir)


StorageFactory = Callable[[dict], Storage]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
