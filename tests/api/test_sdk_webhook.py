"""WebhookReceiver of `lkserver.api` against the official Python and Node receivers and signers.

A webhook is a protojson WebhookEvent body plus an `Authorization` JWT whose `sha256` claim is
the base64 SHA-256 of the body (reference server-api.md §5.2). Bodies signed by any of ours,
`livekit-api` and `livekit-server-sdk` are accepted by every receiver; an altered body or a
token that signs nothing is refused by all of them.
"server" is `lkserver.auth.webhook_token`, the header lkserver's webhook sender is to use.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from collections.abc import Callable

import jwt
import livekit.api as official
import pytest
from aiohttp import ClientSession, web
from conftest import run_node
from google.protobuf.json_format import MessageToJson, Parse, ParseError
from livekit.protocol.models import ParticipantInfo, Room
from livekit.protocol.webhook import WebhookEvent

from lkserver import api
from lkserver.auth import hs256, webhook_token

KEY, SECRET = "APIwebhook", "webhook-secret-of-at-least-32-chars!"


def event_body(compact: bool = True) -> str:
    ev = WebhookEvent(
        event="participant_joined", id="EV_abcdefghijkl", created_at=1_724_000_000,
        room=Room(sid="RM_abcdefghijkl", name="my-room", num_participants=1, metadata="ü ☃",
                  empty_timeout=300, creation_time=1_724_000_000),
        participant=ParticipantInfo(sid="PA_abcdefghijkl", identity="alice", name="Alice",
                                    state=ParticipantInfo.State.ACTIVE, joined_at=1_724_000_001))
    return MessageToJson(ev, indent=None) if compact else MessageToJson(ev)


def sha256_b64(body: str | bytes) -> str:
    raw = body.encode() if isinstance(body, str) else body
    return base64.b64encode(hashlib.sha256(raw).digest()).decode()


# --- signers: (body) -> Authorization header value


def sign_ours(body: str) -> str:
    return (api.AccessToken(KEY, SECRET).with_sha256(sha256_b64(body))
            .with_ttl(datetime.timedelta(minutes=5)).to_jwt())


def sign_official(body: str) -> str:
    return (official.AccessToken(KEY, SECRET).with_sha256(sha256_b64(body))
            .with_ttl(datetime.timedelta(minutes=5)).to_jwt())


def sign_server(body: str) -> str:
    return webhook_token(body.encode(), KEY, SECRET)


def sign_node(body: str) -> str:
    res = run_node("sdk_interop.mjs", "webhook-sign", KEY, SECRET, body)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["auth"]


# --- receivers: (body, auth) -> the event as a dict, or raise


def receive_ours(body: str, auth: str) -> dict:
    ev = api.WebhookReceiver(api.TokenVerifier(KEY, SECRET)).receive(body, auth)
    return json.loads(MessageToJson(ev))


def receive_official(body: str, auth: str) -> dict:
    ev = official.WebhookReceiver(official.TokenVerifier(KEY, SECRET)).receive(body, auth)
    return json.loads(MessageToJson(ev))


class NodeRejected(Exception):
    pass


def receive_node(body: str, auth: str) -> dict:
    res = run_node("sdk_interop.mjs", "webhook-receive", KEY, SECRET, body, auth)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    if not out["ok"]:
        raise NodeRejected(out["error"])
    # protobuf-es toJson: the same protojson (int64 as strings, enums as names)
    return out["event"]


SIGNERS: dict[str, Callable[[str], str]] = {
    "ours": sign_ours, "server": sign_server, "official": sign_official, "node": sign_node}
RECEIVERS: dict[str, Callable[[str, str], dict]] = {
    "ours": receive_ours, "official": receive_official, "node": receive_node}
PAIRS = [(s, r) for s in SIGNERS for r in RECEIVERS if "ours" in (s, r) or s == "server"]


@pytest.mark.parametrize(("signer", "receiver"), PAIRS, ids=[f"{s}->{r}" for s, r in PAIRS])
@pytest.mark.parametrize("compact", [True, False], ids=["compact", "indented"])
def test_signed_body_accepted(signer: str, receiver: str, compact: bool) -> None:
    body = event_body(compact)
    event = RECEIVERS[receiver](body, SIGNERS[signer](body))
    assert event == json.loads(MessageToJson(Parse(body, WebhookEvent())))
    assert event["event"] == "participant_joined" and event["room"]["metadata"] == "ü ☃"
    assert event["participant"]["identity"] == "alice"


@pytest.mark.parametrize("signer", list(SIGNERS))
def test_tampered_body_refused_everywhere(signer: str) -> None:
    body = event_body()
    auth = SIGNERS[signer](body)
    tampered = body.replace('"alice"', '"mallory"')
    assert tampered != body
    with pytest.raises(api.HashMismatchError, match="hash mismatch"):
        receive_ours(tampered, auth)
    with pytest.raises(Exception, match="hash mismatch"):
        receive_official(tampered, auth)
    with pytest.raises(NodeRejected, match="sha256 checksum of body does not match"):
        receive_node(tampered, auth)
    # a single appended byte is already another body
    with pytest.raises(api.HashMismatchError):
        receive_ours(body + " ", auth)


def test_token_without_sha256_refused() -> None:
    body = event_body()
    for auth in (api.AccessToken(KEY, SECRET).to_jwt(), official.AccessToken(KEY, SECRET).to_jwt()):
        with pytest.raises(api.MissingSha256Error, match="sha256 was not found in the token"):
            receive_ours(body, auth)
        with pytest.raises(Exception, match="sha256 was not found in the token"):
            receive_official(body, auth)
        with pytest.raises(NodeRejected):
            receive_node(body, auth)
    # a plain access token must never pass for a webhook, whatever its grants
    admin = api.AccessToken(KEY, SECRET).with_grants(api.VideoGrants(room_admin=True, room="r")).to_jwt()
    with pytest.raises(api.WebhookError):
        receive_ours(body, admin)


def test_bad_tokens_refused() -> None:
    body = event_body()
    hashed = sha256_b64(body)
    cases = {
        "wrong secret": (api.AccessToken(KEY, SECRET + "x").with_sha256(hashed).to_jwt(),
                         jwt.InvalidSignatureError),
        "other key": (api.AccessToken("APIother", SECRET).with_sha256(hashed).to_jwt(),
                      jwt.InvalidIssuerError),
        "expired": (api.AccessToken(KEY, SECRET).with_sha256(hashed)
                    .with_ttl(datetime.timedelta(minutes=-10)).to_jwt(), jwt.ExpiredSignatureError),
        "empty": ("", jwt.DecodeError),
        "garbage": ("not-a-jwt", jwt.DecodeError),
        "sha256 not base64": (api.AccessToken(KEY, SECRET).with_sha256("!!not base64!!").to_jwt(),
                              api.HashMismatchError),
        "sha256 of empty body": (api.AccessToken(KEY, SECRET).with_sha256(sha256_b64("")).to_jwt(),
                                 api.HashMismatchError),
    }
    for name, (auth, error) in cases.items():
        with pytest.raises(error):
            receive_ours(body, auth)
        with pytest.raises(Exception):  # noqa: B017 - the official raises assorted types
            receive_official(body, auth)
        if name not in ("sha256 not base64",):
            with pytest.raises(NodeRejected):
                receive_node(body, auth)


def test_body_forms_and_unknown_fields() -> None:
    receiver = api.WebhookReceiver(api.TokenVerifier(KEY, SECRET))
    body = json.dumps({"event": "room_started", "room": {"name": "r", "futureField": {"x": 1}},
                       "id": "EV_x", "createdAt": "1724000000", "brandNewField": [1, 2]})
    auth = sign_ours(body)
    for form in (body, body.encode(), bytearray(body.encode())):
        ev = receiver.receive(form, auth)
        assert ev.event == "room_started" and ev.room.name == "r" and ev.created_at == 1_724_000_000
    assert receiver.receive(body, "Bearer " + auth).id == "EV_x"
    assert receive_official(body, sign_ours(body))["room"]["name"] == "r"


def test_signed_garbage_body_is_a_parse_error() -> None:
    receiver = api.WebhookReceiver(api.TokenVerifier(KEY, SECRET))
    for body in (b"not json", b'{"event": 5, "room": "x"}', b"\xff\xfe", b"[]"):
        auth = api.AccessToken(KEY, SECRET).with_sha256(sha256_b64(body)).to_jwt()
        with pytest.raises(api.WebhookParseError) as e:
            receiver.receive(body, auth)
        assert isinstance(e.value, ParseError)  # what the official receiver raises


async def test_aiohttp_handler_from_the_readme() -> None:
    """The README's web-handler example, served by aiohttp and called over HTTP."""
    receiver = api.WebhookReceiver(api.TokenVerifier(KEY, SECRET))
    received: list[WebhookEvent] = []

    async def livekit_webhook(request: web.Request) -> web.Response:
        try:
            event = receiver.receive(await request.read(), request.headers.get("Authorization", ""))
        except (jwt.InvalidTokenError, api.WebhookError):  # forged, altered or malformed
            return web.Response(status=401)
        received.append(event)
        return web.Response()

    app = web.Application()
    app.router.add_post("/livekit-webhook", livekit_webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/livekit-webhook"
    body = event_body()
    headers = {"Content-Type": "application/webhook+json", "User-Agent": "LiveKit"}
    try:
        async with ClientSession() as http:
            # what a LiveKit server sends: the raw token, no Bearer
            async with http.post(url, data=body.encode(), headers={**headers, "Authorization": sign_official(body)}) as r:
                assert r.status == 200
            async with http.post(url, data=body.encode() + b" ", headers={**headers, "Authorization": sign_ours(body)}) as r:
                assert r.status == 401
            async with http.post(url, data=body.encode(), headers=headers) as r:
                assert r.status == 401
    finally:
        await runner.cleanup()
    assert [e.participant.identity for e in received] == ["alice"]


def test_server_webhook_token_claims() -> None:
    """LiveKit's webhook token: iss, nbf = iat, exp 5 min later, sha256; no sub, no grants."""
    body = event_body().encode()
    payload = hs256.decode_unverified(webhook_token(body, KEY, SECRET))
    assert list(payload) == ["exp", "iat", "iss", "nbf", "sha256"]
    assert payload["iss"] == KEY and payload["nbf"] == payload["iat"]
    assert payload["exp"] - payload["nbf"] == 300
    assert payload["sha256"] == sha256_b64(body)
    claims = api.TokenVerifier(KEY, SECRET).verify(webhook_token(body, KEY, SECRET))
    assert claims.identity == "" and claims.sha256 == sha256_b64(body)
