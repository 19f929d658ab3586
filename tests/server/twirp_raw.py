"""Raw Twirp over aiohttp for the tests in tests/server: hand-made tokens, both encodings.

No SDK in between, so the tests see exactly what goes over the wire (status, headers, body).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from conftest import API_KEY, API_SECRET
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from livekit.protocol import room as proto_room

ROOM_SERVICE = proto_room.DESCRIPTOR.services_by_name["RoomService"]
RPC_NAMES = [m.name for m in ROOM_SERVICE.methods]
assert len(RPC_NAMES) == 14
INPUT = {m.name: GetMessageClass(m.input_type) for m in ROOM_SERVICE.methods}
OUTPUT = {m.name: GetMessageClass(m.output_type) for m in ROOM_SERVICE.methods}

JSON = "application/json"
PROTOBUF = "application/protobuf"


def make_token(video: dict[str, Any] | None = None, *, key: str = API_KEY, secret: str = API_SECRET,
               ttl: int = 600, algorithm: str = "HS256", **claims: Any) -> str:
    """A JWT as LiveKit SDKs mint it (iss, sub, nbf, exp, video), signed with PyJWT."""
    now = int(time.time())
    payload: dict[str, Any] = {"iss": key, "sub": "", "nbf": now, "exp": now + ttl}
    if video is not None:
        payload["video"] = video
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret, algorithm=algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token}


def encode(msg: Message, content_type: str) -> bytes:
    if content_type == PROTOBUF:
        return msg.SerializeToString()
    # what the Node SDK sends: lowerCamel keys, defaults left out
    return json.dumps(MessageToDict(msg)).encode()


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def twirp_error(self) -> dict:
        """The Twirp error body; asserts LiveKit's exact `Content-Type: application/json`."""
        assert self.content_type == JSON, (self.status, self.content_type, self.text)
        body = self.json()
        assert set(body) <= {"code", "msg", "meta"}, body
        return body

    def message(self, cls: type[Message], content_type: str) -> Message:
        assert self.status == 200, (self.status, self.text)
        assert self.content_type == content_type, self.content_type
        if content_type == PROTOBUF:
            return cls.FromString(self.body)
        from google.protobuf.json_format import ParseDict

        return ParseDict(self.json(), cls(), ignore_unknown_fields=False)


async def post(session: aiohttp.ClientSession, url: str, path: str, body: bytes | Any = b"",
               headers: dict[str, str] | None = None, method: str = "POST") -> Reply:
    headers = headers or {}
    # aiohttp adds `Content-Type: application/octet-stream` by itself unless told not to
    skip = () if "Content-Type" in headers else ("Content-Type",)
    async with session.request(method, url + path, data=body, headers=headers, skip_auto_headers=skip) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


async def rpc(session: aiohttp.ClientSession, url: str, name: str, msg: Message, content_type: str,
              headers: dict[str, str] | None = None, query: str = "") -> Reply:
    h = {"Content-Type": content_type, **(headers or {})}
    return await post(session, url, f"/twirp/livekit.RoomService/{name}{query}", encode(msg, content_type), h)


async def healthy(session: aiohttp.ClientSession, url: str) -> bool:
    async with session.get(url + "/") as resp:
        return resp.status == 200 and await resp.text() == "OK"
