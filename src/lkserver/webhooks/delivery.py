"""Webhook delivery: the event-bus subscriber that fills the outbox, and the senders that empty it.

`WebhookDelivery.handle` is an EventBus subscriber: it encodes the event once, works out its
destinations and appends one outbox record per destination, durably, before `publish` returns.
One `DestinationSender` task per URL then takes ready queues (one per room / egress / ingress,
LiveKit's EventKey) from the outbox and drains each in order, at most `max_in_flight` queues at a
time; a destination that fails is probed with one request at a time until it answers again, when
all of its waiting queues are retried at once. Memory per destination is bounded by
`max_in_flight` records, however much waits in the store.

Guarantee: at-least-once per (event, destination). A record leaves the outbox only after a 2xx,
or into the dead letters after `retry_for` (or at once when the receiver rejects it for good).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from ..config import WebhookSettings
from ..events import Event
from ..logs import get_logger, redact
from ..store.outbox import Outbox, OutboxEntry, OutboxRecord
from . import core
from .metrics import WebhookMetrics

log = get_logger("lkserver.webhooks")

DEFAULT_MAX_IN_FLIGHT = 32  # queues (so requests) in flight per destination
MAX_RESPONSE_READ = 64 * 1024  # bytes of a response body read (then the connection is reused)


def safe_url(url: str) -> str:
    """The URL for logs: no user:password, no access_token."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return redact(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")))
    except ValueError:
        return "<invalid url>"


class WebhookDelivery:
    def __init__(self, settings: WebhookSettings, keys: Mapping[str, str], outbox: Outbox, *,
                 metrics: WebhookMetrics | None = None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 poll_interval: float = 1.0, policy: core.RetryPolicy | None = None,
                 clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self.keys = keys
        self.outbox = outbox
        self.metrics = metrics or WebhookMetrics()
        self.filter = core.EventFilter(settings.filter_params)
        self.policy = policy or core.RetryPolicy(retry_for=settings.retry_for)
        self.max_in_flight = max(1, max_in_flight)
        self.poll_interval = poll_interval
        # a lease outlives the longest request, so a live holder never loses its queue
        self.lease = settings.request_timeout + 10.0
        self.clock = clock
        self.rand = rand
        self.owner = uuid.uuid4().hex
        self.senders: dict[str, DestinationSender] = {}
        self.session: aiohttp.ClientSession | None = None
        self._started = False
        self._stopping = False
        self._discover: asyncio.Task | None = None
        self.metrics.track_in_flight(lambda: sum(len(s.active) for s in self.senders.values()))

    # -- filling the outbox (synchronous: inside EventBus.publish) -------------------------------

    def handle(self, event: Event) -> None:
        """EventBus subscriber: the event is in the outbox for each destination when this returns."""
        dests = core.destinations(event.name, self.settings.urls, self.settings.api_key, self.filter,
                                  event.extra_webhooks)
        if not dests:
            return
        wh = event.to_webhook_event()
        body = core.encode_event(wh)
        key = core.event_key(wh)
        entries = [OutboxEntry(d.url, key, event.id, str(event.name), d.signing_key, body,
                               event.created_at) for d in dests]
        # fast path: a sender with room to spare takes a queue this event starts right away,
        # from memory, without a round trip to the store
        senders = [self._sender_with_room(d.url, key) for d in dests]
        now = self.clock()
        appended = self.outbox.append(entries, now, claim=[s is not None for s in senders],
                                      owner=self.owner, lease_until=now + self.lease)
        self.metrics.enqueued.labels(str(event.name)).inc(len(entries))
        for entry, sender, res in zip(entries, senders, appended):
            if res.claimed_seq and sender is not None:
                sender.start_drain(OutboxRecord(**vars(entry), seq=res.claimed_seq, enqueued_at=now))
            elif res.new_queue:
                self._wake(entry.destination)

    def _sender_with_room(self, url: str, key: str) -> DestinationSender | None:
        if not self._started or self._stopping:
            return None
        s = self.senders.get(url)
        if s is None or s.done or s.stopping or key in s.active or len(s.active) >= s.limit():
            return None
        return s

    def _wake(self, url: str) -> None:
        if not self._started or self._stopping:
            return
        sender = self.senders.get(url)
        if sender is None or sender.done:
            sender = self.senders[url] = DestinationSender(self, url)
            sender.start()
        sender.wakeup.set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume whatever the outbox holds; then deliver as events arrive."""
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
            skip_auto_headers=("User-Agent",), auto_decompress=False)
        if not self.outbox.shared:
            # this process owns the store: leases left by a killed predecessor end now
            released = await self.outbox.release(None, self.clock())
            if released:
                log.info("webhook_leases_released", queues=released)
        self._started = True
        for url in list(self.settings.urls) + await self.outbox.destinations():
            self._wake(url)
        # other processes (servers sharing Redis, `lkserver webhook outbox --redeliver`) may
        # queue for destinations this one is not sending to
        self._discover = asyncio.create_task(self._discover_forever())

    async def _discover_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval * 5)
            try:
                for url in await self.outbox.destinations():
                    if url not in self.senders or self.senders[url].done:
                        self._wake(url)
            except Exception:
                log.exception("webhook_discover_failed")

    async def stop(self, grace: float = 2.0) -> None:
        """Stop sending: requests in flight get `grace` seconds to finish, the rest stay queued."""
        self._stopping = True
        if self._discover:
            self._discover.cancel()
        senders = list(self.senders.values())
        for s in senders:
            s.stopping = True
            s.wakeup.set()
        drains = [t for s in senders for t in s.active.values()]
        if drains:
            await asyncio.wait(drains, timeout=grace)
        for s in senders:
            await s.cancel()
        try:
            await self.outbox.release(self.owner, self.clock())
        except Exception as e:  # noqa: BLE001 - the store may be gone (Redis down); the leases expire
            log.warning("webhook_release_failed", error=f"{type(e).__name__}: {e}",
                        hint="pending events are delivered after their lease expires")
        if self.session:
            await self.session.close()
        self.senders.clear()
        self._started = False

    # -- one attempt -----------------------------------------------------------------------------

    async def attempt(self, record: OutboxRecord) -> tuple[core.Outcome, str]:
        """POST the record once; the outcome and, if it failed, why."""
        secret = self.keys.get(record.signing_key)
        if secret is None:
            return core.Outcome.REJECTED, f"no secret for provided signing key {record.signing_key!r}"
        headers = core.request_headers(record.body, record.signing_key, secret)
        assert self.session is not None
        try:
            async with self.session.post(
                record.destination, data=record.body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout),
            ) as resp:
                await resp.content.read(MAX_RESPONSE_READ)
                outcome = core.classify_status(resp.status)
                return outcome, "" if outcome is core.Outcome.DELIVERED else f"HTTP {resp.status}"
        except TimeoutError:
            return core.Outcome.RETRY, f"no answer in {self.settings.request_timeout:g}s"
        except (aiohttp.ClientError, OSError) as e:
            return core.Outcome.RETRY, f"{type(e).__name__}: {e}"[:300]
        except ValueError as e:  # not a URL aiohttp can post to
            return core.Outcome.REJECTED, f"bad url: {e}"[:300]


class DestinationSender:
    """Delivers one URL's queues: takes ready ones from the outbox, drains each in order."""

    def __init__(self, engine: WebhookDelivery, url: str) -> None:
        self.engine = engine
        self.url = url
        self.wakeup = asyncio.Event()
        self.active: dict[str, asyncio.Task] = {}
        self.failing = False  # the last attempt failed: probe with one queue at a time
        self.stopping = False
        self._task: asyncio.Task | None = None

    @property
    def done(self) -> bool:
        return self._task is None or self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def cancel(self) -> None:
        tasks = [t for t in [self._task, *self.active.values()] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        e = self.engine
        idle_since: float | None = None
        while not self.stopping:
            self.wakeup.clear()
            free = self.limit() - len(self.active)
            now = e.clock()
            try:
                # one store call per wake-up: claim what is ready, learn when more will be
                heads, next_at = await e.outbox.take(self.url, now, now + e.lease, e.owner,
                                                     max(0, free))
            except Exception:
                log.exception("webhook_outbox_failed", url=safe_url(self.url))
                await asyncio.sleep(e.poll_interval)
                continue
            for record in heads:
                self.start_drain(record)
            if len(heads) == free > 0:
                continue  # maybe more are ready than we took
            now = e.clock()
            if next_at is None and not self.active:
                # nothing queued: a URL that is not configured (a per-request one) retires
                if self.url not in e.settings.urls:
                    idle_since = idle_since or now
                    if now - idle_since > 60.0:
                        if e.senders.get(self.url) is self:
                            del e.senders[self.url]
                        return
            else:
                idle_since = None
            timeout = e.poll_interval
            if next_at is not None and len(self.active) < self.limit():
                timeout = min(timeout, max(0.01, next_at - now))
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout)
            except TimeoutError:
                pass

    def limit(self) -> int:
        """Queues in flight at most: one while the destination fails (a probe), else the max."""
        return 1 if self.failing else self.engine.max_in_flight

    def start_drain(self, record: OutboxRecord) -> None:
        if record.key in self.active:
            return  # (cannot happen while leases outlive requests) its drain goes on
        self.active[record.key] = asyncio.create_task(self._drain(record.key, record))

    async def _drain(self, key: str, record: OutboxRecord | None) -> None:
        """Deliver one queue in order until it is empty, an attempt fails, or we stop."""
        e = self.engine
        try:
            while record is not None:
                outcome, error = await e.attempt(record)
                now = e.clock()
                decision = e.policy.decide(outcome, error, record.attempts + 1, record.enqueued_at,
                                           now, e.rand())
                e.metrics.attempts.labels(outcome.value).inc()
                if decision.action is core.Action.ACK:
                    e.metrics.delivered.labels(record.event_name).inc()
                    e.metrics.latency.observe(max(0.0, now - record.created_at))
                    if self.failing:
                        self.failing = False
                        log.info("webhook_destination_recovered", url=safe_url(self.url))
                        await e.outbox.retry_now(self.url, now)
                        self.wakeup.set()
                    if self.stopping:
                        await e.outbox.advance(record, now)
                        return
                    record = await e.outbox.advance(record, now + e.lease)
                elif decision.action is core.Action.DEAD:
                    log.error("webhook_dead_lettered", url=safe_url(self.url), name=record.event_name,
                              id=record.event_id, key=key, attempts=record.attempts + 1,
                              reason=decision.reason)
                    e.metrics.dead.labels(record.event_name).inc()
                    record = await e.outbox.dead_letter(record, decision.reason, now,
                                                        now if self.stopping else now + e.lease)
                    if self.stopping:
                        return
                else:
                    if not self.failing:
                        log.warning("webhook_destination_failing", url=safe_url(self.url),
                                    reason=decision.reason)
                    self.failing = True
                    log.debug("webhook_retry", url=safe_url(self.url), id=record.event_id, key=key,
                              attempts=record.attempts + 1, reason=decision.reason,
                              retry_in=round(decision.ready_at - now, 2))
                    await e.outbox.retry_later(record, decision.reason, decision.ready_at)
                    return
                if self.stopping:
                    return  # the lease is released by WebhookDelivery.stop
        except asyncio.CancelledError:
            raise
        except Exception:
            # the lease runs out and the queue is taken again
            log.exception("webhook_drain_failed", url=safe_url(self.url), key=key)
        finally:
            self.active.pop(key, None)
            self.wakeup.set()
