"""The one event stream: the domain publishes typed events, features subscribe.

Event names and payloads are LiveKit's webhook events (reference server-api.md §5.1): an `Event`
carries the same protobuf payloads as a `WebhookEvent` and turns into one with
`to_webhook_event()`. Subscribers are called synchronously, in subscription order, inside
`publish()`; a subscriber that must do I/O hands the event to its own bounded queue (or, for
webhooks, a durable outbox) and returns. A failing subscriber is logged and never stops the
others or the publisher.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable

from livekit.protocol.egress import EgressInfo
from livekit.protocol.ingress import IngressInfo
from livekit.protocol.models import ParticipantInfo, Room, TrackInfo
from livekit.protocol.webhook import WebhookEvent

from . import ids
from .logs import get_logger

log = get_logger("lkserver.events")


class EventName(StrEnum):
    ROOM_STARTED = "room_started"
    ROOM_FINISHED = "room_finished"
    PARTICIPANT_JOINED = "participant_joined"
    PARTICIPANT_LEFT = "participant_left"
    PARTICIPANT_CONNECTION_ABORTED = "participant_connection_aborted"
    TRACK_PUBLISHED = "track_published"
    TRACK_UNPUBLISHED = "track_unpublished"
    EGRESS_STARTED = "egress_started"
    EGRESS_UPDATED = "egress_updated"
    EGRESS_ENDED = "egress_ended"
    INGRESS_STARTED = "ingress_started"
    INGRESS_ENDED = "ingress_ended"


@dataclass
class Event:
    name: EventName
    room: Room | None = None
    participant: ParticipantInfo | None = None
    track: TrackInfo | None = None
    egress_info: EgressInfo | None = None
    ingress_info: IngressInfo | None = None
    # per-request webhook destinations (Egress/Ingress requests' `webhooks`), delivered in
    # addition to the configured ones: livekit.WebhookConfig messages
    extra_webhooks: list = field(default_factory=list)
    id: str = field(default_factory=lambda: ids.new_id(ids.WEBHOOK_EVENT))
    created_at: float = field(default_factory=time.time)

    def to_webhook_event(self) -> WebhookEvent:
        ev = WebhookEvent(event=str(self.name), id=self.id, created_at=int(self.created_at))
        if self.room is not None:
            ev.room.CopyFrom(self.room)
        if self.participant is not None:
            ev.participant.CopyFrom(self.participant)
        if self.track is not None:
            ev.track.CopyFrom(self.track)
        if self.egress_info is not None:
            ev.egress_info.CopyFrom(self.egress_info)
        if self.ingress_info is not None:
            ev.ingress_info.CopyFrom(self.ingress_info)
        return ev


Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for fn in list(self._subscribers):
            try:
                fn(event)
            except Exception:
                log.exception("event_subscriber_failed", event=event.name, id=event.id)
