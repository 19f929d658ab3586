"""Prometheus metrics of webhook delivery, registered on the server's registry.

Labels stay bounded: event names and attempt outcomes, never URLs (per-request webhook URLs are
unbounded).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.enqueued = Counter(
            "lkserver_webhook_events_enqueued", "Webhook records written to the outbox (one per destination)",
            ["event"], registry=registry)
        self.delivered = Counter(
            "lkserver_webhook_events_delivered", "Webhook records a receiver accepted (2xx)",
            ["event"], registry=registry)
        self.dead = Counter(
            "lkserver_webhook_dead_letters", "Webhook records moved to the dead letters",
            ["event"], registry=registry)
        self.attempts = Counter(
            "lkserver_webhook_requests", "Webhook requests by outcome (delivered, retry, rejected)",
            ["outcome"], registry=registry)
        self.latency = Histogram(
            "lkserver_webhook_delivery_latency_seconds", "Time from the event to its accepted delivery",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600))
        self.in_flight = Gauge("lkserver_webhook_requests_in_flight", "Webhook requests being sent",
                               registry=registry)

    def track_in_flight(self, count: Callable[[], int]) -> None:
        self.in_flight.set_function(count)
