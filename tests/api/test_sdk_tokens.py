"""Access tokens of `lkserver.api` against the official `livekit-api`, both ways.

For the same builder calls at the same instant, our token must be the official SDK's token byte
for byte (HS256 is deterministic, so equal strings mean equal claim JSON, key order and
encoding); each side must verify the other's and read the same claims. Time is pinned on both
sides so `nbf`/`exp` match.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import random
import types
from dataclasses import dataclass, field
from typing import Any

import jwt
import livekit.api as official
import livekit.api.access_token as official_tokens
import pytest
from google.protobuf.json_format import MessageToDict
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.egress import EncodedFileOutput, RoomCompositeEgressRequest
from livekit.protocol.room import RoomConfiguration, RoomEgress

from lkserver import api
from lkserver.auth import hs256, tokens, verify_with_keys

KEY, SECRET = "APIk3yForTests", "a-secret-of-at-least-32-characters-long"
UTC = datetime.UTC


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> datetime.datetime:
    """Pin the clock both SDKs mint against to an instant 30 s ahead (so a side that ignored the
    pin would differ, and still within the verifiers' 60 s of leeway), with a sub-second part."""
    start = datetime.datetime.now(UTC).replace(microsecond=654321) + datetime.timedelta(seconds=30)
    start_ns = (int(start.timestamp()) * 1_000_000 + start.microsecond) * 1000
    monkeypatch.setattr(tokens, "_clock_ns", lambda: start_ns)

    class FrozenDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime.datetime:  # type: ignore[override]
            return start

    shim = types.SimpleNamespace(datetime=FrozenDatetime, timezone=datetime.timezone,
                                 timedelta=datetime.timedelta)
    monkeypatch.setattr(official_tokens, "datetime", shim)
    return start


# --- the inputs: one spec drives both SDKs' builders


@dataclass
class Spec:
    identity: str | None = None
    video: dict[str, Any] | None = None
    sip: dict[str, bool] | None = None
    kind: str | None = None
    name: str | None = None
    metadata: str | None = None
    attributes: dict[str, str] | None = None
    sha256: str | None = None
    room_preset: str | None = None
    room_config: RoomConfiguration | None = None
    ttl: datetime.timedelta | None = None
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # with_<x>_grants -> kwargs


EXTRA_GRANTS = {
    "observability": "ObservabilityGrants",
    "inference": "InferenceGrants",
    "agent": "AgentGrants",
    "agent_endpoint": "AgentEndpointGrants",
    "agent_thread": "AgentThreadGrants",
}


def build(mod: Any, spec: Spec) -> Any:
    tok = mod.AccessToken(KEY, SECRET)
    if spec.identity is not None:
        tok.with_identity(spec.identity)
    if spec.video is not None:
        tok.with_grants(mod.VideoGrants(**spec.video))
    if spec.sip is not None:
        tok.with_sip_grants(mod.SIPGrants(**spec.sip))
    for what, kwargs in spec.extra.items():
        getattr(tok, f"with_{what}_grants")(getattr(mod, EXTRA_GRANTS[what])(**kwargs))
    for attr in ("kind", "name", "metadata", "attributes", "sha256", "room_preset"):
        value = getattr(spec, attr)
        if value is not None:
            getattr(tok, f"with_{attr}")(value)
    if spec.room_config is not None:
        tok.with_room_config(spec.room_config)
    if spec.ttl is not None:
        tok.with_ttl(spec.ttl)
    return tok


BOOL3 = [None, True, False]
VIDEO_VALUES: dict[str, list[Any]] = {
    "room_create": BOOL3, "room_list": BOOL3, "room_record": BOOL3, "room_admin": BOOL3,
    "room_join": BOOL3, "room": ["", "my-room", "salle ü 会议"],
    "destination_room": [None, "", "other-room"],
    "can_publish": [True, False], "can_subscribe": [True, False], "can_publish_data": [True, False],
    "can_publish_sources": [None, [], ["camera"], ["camera", "microphone", "screen_share",
                                                   "screen_share_audio"]],
    "can_update_own_metadata": BOOL3, "ingress_admin": BOOL3, "hidden": BOOL3, "recorder": BOOL3,
    "agent": BOOL3, "can_manage_agent_session": BOOL3, "can_subscribe_metrics": BOOL3,
}
SIP_VALUES = [None, {}, {"admin": True}, {"call": True}, {"admin": True, "call": True},
              {"admin": False, "call": False}]
ROOM_CONFIGS = [
    None,
    RoomConfiguration(),
    RoomConfiguration(name="cfg-room", empty_timeout=60, departure_timeout=5, max_participants=7,
                      metadata='{"k":"v"}', min_playout_delay=100, max_playout_delay=2000,
                      sync_streams=True),
    RoomConfiguration(agents=[RoomAgentDispatch(agent_name="support-bot", metadata="m"),
                              RoomAgentDispatch(agent_name="")],
                      egress=RoomEgress(room=RoomCompositeEgressRequest(
                          room_name="r", layout="grid",
                          file_outputs=[EncodedFileOutput(filepath="out.mp4")]))),
]
EXTRA_VALUES: dict[str, list[dict[str, Any]]] = {
    "observability": [{}, {"write": True}],
    "inference": [{}, {"perform": True}],
    "agent": [{}, {"admin": True, "dispatch_admin": True}],
    "agent_endpoint": [{}, {"call": True, "agent_name": "a", "deployment": "prod"}],
    "agent_thread": [{}, {"all": True, "scope": "s", "thread_ids": ["t1", "t2"], "read": True}],
}


def one_at_a_time() -> list[tuple[str, Spec]]:
    """Every value of every input, the others left at their defaults."""
    out = [("empty", Spec())]
    for name, values in VIDEO_VALUES.items():
        for v in values:
            video = {name: v}
            if name == "room_join" and v:
                video["room"] = "r"
            out.append((f"video.{name}={v!r}", Spec(identity="alice", video=video)))
    out += [(f"sip={s!r}", Spec(sip=s)) for s in SIP_VALUES]
    out += [(f"kind={k}", Spec(identity="agent-1", kind=k))
            for k in ("", "standard", "egress", "ingress", "sip", "agent")]
    out += [(f"room_config#{i}", Spec(room_config=c)) for i, c in enumerate(ROOM_CONFIGS)]
    out += [(f"{what}={kw!r}", Spec(extra={what: kw})) for what, vals in EXTRA_VALUES.items()
            for kw in vals]
    out += [
        ("name+metadata", Spec(identity="bob", name="Bob ü", metadata='{"role":"host","ü":1}')),
        ("empty strings", Spec(identity="", name="", metadata="", sha256="", room_preset="")),
        ("attributes", Spec(identity="a", attributes={"k": "v", "empty": "", "ü": "☃"})),
        ("attributes-empty", Spec(attributes={})),
        ("sha256", Spec(sha256=base64.b64encode(b"\x00" * 32).decode())),
        ("room_preset", Spec(room_preset="small")),
        ("ttl 10m", Spec(ttl=datetime.timedelta(minutes=10))),
        ("ttl 1.5s", Spec(ttl=datetime.timedelta(seconds=1, microseconds=500000))),
        ("ttl 1d+0.999999s", Spec(ttl=datetime.timedelta(days=1, microseconds=999999))),
        ("ttl 30d", Spec(ttl=datetime.timedelta(days=30))),
    ]
    return out


def random_combinations(n: int, seed: int = 1706) -> list[tuple[str, Spec]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        video = {k: rng.choice(v) for k, v in VIDEO_VALUES.items() if rng.random() < 0.5}
        extra = {k: rng.choice(v) for k, v in EXTRA_VALUES.items() if rng.random() < 0.2}
        spec = Spec(
            identity=rng.choice([None, "", "alice", "ü-identity"]),
            video=video if rng.random() < 0.85 else None,
            sip=rng.choice(SIP_VALUES),
            kind=rng.choice([None, "standard", "egress", "ingress", "sip", "agent"]),
            name=rng.choice([None, "", "Alice"]),
            metadata=rng.choice([None, "", "meta", '{"a":[1,2]}']),
            attributes=rng.choice([None, {}, {"x": "1", "y": ""}]),
            sha256=rng.choice([None, "", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]),
            room_preset=rng.choice([None, "", "small"]),
            room_config=rng.choice(ROOM_CONFIGS),
            ttl=rng.choice([None, datetime.timedelta(minutes=5), datetime.timedelta(hours=1, seconds=7)]),
            extra=extra,
        )
        out.append((f"random#{i}", spec))
    return out


CASES = one_at_a_time() + random_combinations(150)


def payload_json(token: str) -> bytes:
    segment = token.split(".")[1]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def normalized(claims: Any) -> dict[str, Any]:
    """A Claims object of either SDK as plain data (room_config as protojson)."""
    out = {f.name: getattr(claims, f.name) for f in dataclasses.fields(claims)}
    for k, v in out.items():
        if dataclasses.is_dataclass(v):
            out[k] = dataclasses.asdict(v)
    if out["room_config"] is not None:
        out["room_config"] = MessageToDict(out["room_config"])
    return out


@pytest.mark.parametrize("spec", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_same_token_as_official_and_verifies_both_ways(frozen: datetime.datetime, spec: Spec) -> None:
    start = frozen
    try:
        theirs = build(official, spec).to_jwt()
    except ValueError as e:
        # room_join without identity or room: ours refuses the same way
        with pytest.raises(ValueError, match="identity and room must be set"):
            build(api, spec).to_jwt()
        assert "identity and room must be set" in str(e)
        return
    ours = build(api, spec).to_jwt()
    assert payload_json(ours) == payload_json(theirs)
    assert ours == theirs  # header, claim JSON and signature, byte for byte

    payload = json.loads(payload_json(ours))
    ttl = spec.ttl or datetime.timedelta(hours=6)
    assert payload["nbf"] == int(start.timestamp())
    assert payload["exp"] == int((start + ttl).timestamp())

    our_verifier = api.TokenVerifier(KEY, SECRET)
    their_verifier = official.TokenVerifier(KEY, SECRET)
    from_theirs = our_verifier.verify(theirs)
    from_ours = their_verifier.verify(ours)
    assert normalized(from_theirs) == normalized(from_ours)
    assert normalized(our_verifier.verify(ours)) == normalized(their_verifier.verify(theirs))
    claims, raw, key = verify_with_keys(ours, {KEY: SECRET})
    assert key == KEY and raw == payload and normalized(claims) == normalized(from_ours)


def test_claim_json_layout(frozen: datetime.datetime) -> None:
    """The exact bytes of a join token's claims (reference server-api.md §2.3, clients.md §1)."""
    token = (api.AccessToken(KEY, SECRET).with_identity("alice").with_name("Alice")
             .with_kind("agent").with_attributes({"a": "1"})
             .with_grants(api.VideoGrants(room_join=True, room="my-room", can_publish_sources=["camera"]))
             .with_sip_grants(api.SIPGrants(call=True))
             .with_room_preset("small")
             .with_room_config(RoomConfiguration(max_participants=3,
                                                 agents=[RoomAgentDispatch(agent_name="bot")]))
             .to_jwt())
    nbf = int(frozen.timestamp())
    assert payload_json(token).decode() == (
        '{"name":"Alice","kind":"agent",'
        '"video":{"roomJoin":true,"room":"my-room","canPublish":true,"canSubscribe":true,'
        '"canPublishData":true,"canPublishSources":["camera"]},'
        '"sip":{"admin":false,"call":true},"attributes":{"a":"1"},"roomPreset":"small",'
        '"roomConfig":{"maxParticipants":3,"agents":[{"agentName":"bot"}]},'
        f'"sub":"alice","iss":"{KEY}","nbf":{nbf},"exp":{nbf + 6 * 3600}}}')
    assert token.split(".")[0] == "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"  # {"alg":"HS256","typ":"JWT"}


def test_claims_asdict_matches_official() -> None:
    for _, spec in CASES:
        ours, theirs = build(api, spec).claims, build(official, spec).claims
        assert ours.asdict() == theirs.asdict()
        assert list(ours.asdict()) == list(theirs.asdict())


def test_grant_fields_and_defaults_match_official() -> None:
    pairs = [(api.VideoGrants, official.VideoGrants), (api.SIPGrants, official.SIPGrants),
             (api.Claims, official_tokens.Claims), (api.InferenceGrants, official.InferenceGrants),
             (api.ObservabilityGrants, official.ObservabilityGrants),
             (api.AgentGrants, official.AgentGrants), (api.AgentEndpointGrants, official.AgentEndpointGrants),
             (api.AgentThreadGrants, official.AgentThreadGrants)]
    for ours, theirs in pairs:
        assert [(f.name, f.default) for f in dataclasses.fields(ours)] == [
            (f.name, f.default) for f in dataclasses.fields(theirs)]
    v = api.VideoGrants()
    assert (v.can_publish, v.can_subscribe, v.can_publish_data, v.room) == (True, True, True, "")
    assert (api.SIPGrants().admin, api.SIPGrants().call) == (False, False)
    assert api.AccessToken.ParticipantKind == official.AccessToken.ParticipantKind


def test_node_minted_token_verifies_in_ours_and_ours_in_node() -> None:
    from conftest import run_node

    ours = (api.AccessToken(KEY, SECRET).with_identity("alice").with_name("A")
            .with_grants(api.VideoGrants(room_join=True, room="r", can_publish=False))
            .with_sip_grants(api.SIPGrants(admin=True)).to_jwt())
    res = run_node("sdk_interop.mjs", "token", KEY, SECRET, ours)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    # Node's verifier accepted ours; it minted one with the same grants (header without "typ")
    assert out["verified"]["sub"] == "alice" and out["verified"]["video"]["canPublish"] is False
    node_token = out["minted"]
    assert node_token.split(".")[0] != hs256.STANDARD_HEADER_SEGMENT.decode()
    claims = api.TokenVerifier(KEY, SECRET).verify(node_token)
    assert claims.identity == "node-alice" and claims.name == "Node A"
    assert claims.video.room_join and claims.video.room == "r" and claims.video.can_publish is False
    assert claims.sip.admin and not claims.sip.call
    assert claims.metadata == "md" and claims.attributes == {"k": "v"}
    with pytest.raises(jwt.InvalidSignatureError):
        api.TokenVerifier(KEY, SECRET + "x").verify(node_token)


def test_keys_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEKIT_API_KEY", raising=False)
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)
    with pytest.raises(ValueError, match="api_key and api_secret must be set"):
        api.AccessToken()
    with pytest.raises(ValueError, match="api_key and api_secret must be set"):
        api.AccessToken(KEY)
    with pytest.raises(ValueError, match="api_key and api_secret must be set"):
        api.TokenVerifier().verify("a.b.c")
    monkeypatch.setenv("LIVEKIT_API_KEY", KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    token = api.AccessToken().with_identity("env").to_jwt()
    assert api.TokenVerifier().verify(token).identity == "env"
    assert official.TokenVerifier().verify(token).identity == "env"


def test_join_needs_identity_and_room() -> None:
    with pytest.raises(ValueError, match="identity and room must be set when joining a room"):
        api.AccessToken(KEY, SECRET).with_grants(api.VideoGrants(room_join=True, room="r")).to_jwt()
    with pytest.raises(ValueError, match="identity and room must be set when joining a room"):
        api.AccessToken(KEY, SECRET).with_identity("a").with_grants(api.VideoGrants(room_join=True)).to_jwt()


def test_verify_reads_room_config_and_ignores_unknown_grants() -> None:
    payload = {
        "sub": "", "jti": "from-jti", "iss": KEY, "exp": 4_102_444_800,
        "video": {"roomJoin": True, "room": "r", "futureGrant": True, "room_admin": True},
        "sip": {"admin": True, "teleport": True},
        "roomConfig": {"name": "r", "emptyTimeout": 30, "futureField": 1, "max_participants": 2},
        "roomPreset": "small", "kind": "agent", "unknownClaim": [1],
    }
    token = jwt.encode(payload, SECRET, algorithm="HS256")
    claims = api.TokenVerifier(KEY, SECRET).verify(token)
    assert claims.video.room_join and claims.video.room_admin and claims.video.room == "r"
    assert claims.sip.admin
    assert claims.room_config.name == "r" and claims.room_config.empty_timeout == 30
    assert claims.room_config.max_participants == 2
    assert claims.room_preset == "small" and claims.kind == "agent"
    # LiveKit's verifier (auth/verifier.go) falls back to jti when sub is empty
    assert claims.identity == "from-jti"
