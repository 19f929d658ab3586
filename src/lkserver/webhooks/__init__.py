"""Webhooks: LiveKit's signed requests (core, sans-I/O), delivered from a durable outbox."""

from .core import (
    CONTENT_TYPE,
    USER_AGENT,
    Destination,
    EventFilter,
    Outcome,
    RetryPolicy,
    encode_event,
    event_key,
    request_headers,
)
from .delivery import WebhookDelivery
from .metrics import WebhookMetrics

__all__ = [
    "CONTENT_TYPE",
    "USER_AGENT",
    "Destination",
    "EventFilter",
    "Outcome",
    "RetryPolicy",
    "WebhookDelivery",
    "WebhookMetrics",
    "encode_event",
    "event_key",
    "request_headers",
]
