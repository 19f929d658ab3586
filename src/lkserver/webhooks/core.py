"""Sans-I/O core of webhook delivery: the exact requests LiveKit sends, and what an answer means.

Reproduces livekit/protocol `webhook/` (reference server-api.md §5): the body is the protojson of
a `WebhookEvent` with default options (lowerCamelCase, zero values left out, int64 as strings,
enums by name), `Authorization` is the raw HS256 JWT (no `Bearer `) of the signing key with a
`sha256` claim = base64-std(SHA-256(body)), valid 5 minutes; `Content-Type:
application/webhook+json`, `User-Agent: LiveKit`. Events are ordered per resource (`event_key`,
LiveKit's EventKey); `webhook.filter_params` picks the events the configured URLs get; per-request
`WebhookConfig`s (egress/ingress requests) receive their events in addition.

Where lkserver differs on purpose: nothing is dropped (LiveKit drops after 4 retries, 30 s, or a
queue of 200); a failed attempt is retried with exponential backoff and jitter until
`webhook.retry_for`, then dead-lettered, and a request the receiver refuses for good (4xx other
than 408/429, 501, a redirect) is dead-lettered at once instead of counted as sent.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict
from livekit.protocol.webhook import WebhookEvent

from ..auth import webhook_token

CONTENT_TYPE = "application/webhook+json"
USER_AGENT = "LiveKit"


# -- the request ---------------------------------------------------------------------------------

def encode_event(event: WebhookEvent) -> bytes:
    """The request body: protojson with default options, compact, UTF-8."""
    return json.dumps(MessageToDict(event), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def request_headers(body: bytes, api_key: str, secret: str) -> dict[str, str]:
    """The headers of one attempt; the token (auth.webhook_token) is minted per attempt, since it
    lives 5 minutes and a record may wait longer than that."""
    return {
        "Authorization": webhook_token(body, api_key, secret),
        "Content-Type": CONTENT_TYPE,
        "User-Agent": USER_AGENT,
    }


def event_key(event: WebhookEvent) -> str:
    """LiveKit's EventKey: the resource whose events are delivered in order, one at a time."""
    if event.HasField("egress_info"):
        return event.egress_info.egress_id
    if event.HasField("ingress_info"):
        return event.ingress_info.ingress_id
    if event.HasField("room"):
        return event.room.name
    if event.HasField("participant"):
        return event.participant.identity
    if event.HasField("track"):
        return event.track.sid
    return "default"


# -- where it goes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Destination:
    url: str
    signing_key: str  # the API key that signs the requests


class EventFilter:
    """`webhook.filter_params`: include_events wins; else exclude_events; else everything.
    (The config's validation checks the shape.)"""

    def __init__(self, params: Mapping[str, Any] | None) -> None:
        params = params or {}
        self.include = frozenset(params.get("include_events") or ())
        self.exclude = frozenset(params.get("exclude_events") or ())

    def allows(self, event_name: str) -> bool:
        if self.include:
            return event_name in self.include
        if self.exclude:
            return event_name not in self.exclude
        return True


def destinations(event_name: str, urls: Iterable[str], api_key: str, event_filter: EventFilter,
                 extra: Iterable[Any] = ()) -> list[Destination]:
    """The configured URLs (filtered, signed with `api_key`), then the event's own
    `WebhookConfig`s (unfiltered, as LiveKit; an empty signing_key means `api_key`)."""
    out: list[Destination] = []
    if event_filter.allows(event_name):
        out += [Destination(u, api_key) for u in urls if u]
    for wh in extra:
        if wh.url:
            out.append(Destination(wh.url, wh.signing_key or api_key))
    seen: set[Destination] = set()
    unique = []
    for d in out:
        if d not in seen:
            seen.add(d)
            unique.append(d)
    return unique


# -- what an answer means ------------------------------------------------------------------------

class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # the receiver may take it later: connection error, timeout, 408, 429, 5xx
    REJECTED = "rejected"  # it never will: other 4xx, 501, 3xx, no secret for the signing key


def classify_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (408, 429) or (status >= 500 and status != 501):
        return Outcome.RETRY
    return Outcome.REJECTED


class Action(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class Decision:
    action: Action
    ready_at: float = 0.0  # for RETRY: when the queue may be tried again
    reason: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, for `retry_for` seconds from when the record was queued.

    Attempt n (1-based) that fails waits min(cap, base * 2**(n-1)) scaled by a random factor in
    [1 - jitter, 1]; the last attempt happens at the end of the window, and if it fails too the
    record is dead. Every record gets at least one attempt, however long it waited in its queue.
    """

    retry_for: float = 24 * 3600.0
    base: float = 0.5
    cap: float = 30.0
    jitter: float = 0.5

    def delay(self, attempts: int, rand: float) -> float:
        d = min(self.cap, self.base * (2 ** max(0, min(attempts - 1, 30))))
        return d * (1.0 - self.jitter * rand)

    def decide(self, outcome: Outcome, error: str, attempts: int, enqueued_at: float, now: float,
               rand: float) -> Decision:
        """What to do after attempt number `attempts` (1-based) ended with `outcome`."""
        if outcome is Outcome.DELIVERED:
            return Decision(Action.ACK)
        if outcome is Outcome.REJECTED:
            return Decision(Action.DEAD, reason=error)
        deadline = enqueued_at + self.retry_for
        if now >= deadline:
            return Decision(Action.DEAD, reason=f"retried for {self.retry_for:g}s: {error}")
        return Decision(Action.RETRY, ready_at=min(now + self.delay(attempts, rand), deadline),
                        reason=error)
