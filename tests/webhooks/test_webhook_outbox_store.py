"""The webhook outbox contract, on both store backends (SQLite file, real Redis).

Times are passed explicitly (`now`), so leases, backoffs and expiries are tested without waiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from lkserver.store import Appended, OutboxEntry, Store
from lkserver.store.redis import RedisKV
from lkserver.store.sqlite import SQLiteKV

A, B = "http://a.example/hook", "http://b.example/hook"


def entry(dest: str, key: str, n: int) -> OutboxEntry:
    return OutboxEntry(dest, key, f"EV_{key}{n}", "room_started", "APIkey",
                       f'{{"n":{n},"k":"{key}","u":"\u00fc"}}'.encode() + b"\x00\xff", 100.0 + n)


def open_backend(backend: str, tmp_path: Path, redis_url: str) -> Store:
    if backend == "sqlite":
        return Store(SQLiteKV(str(tmp_path / "lkserver.db")))
    return Store(RedisKV(redis_url, db=7))


@pytest.fixture(params=["sqlite", "redis"])
async def store(request, tmp_path: Path, redis_url: str) -> AsyncIterator[Store]:
    if request.param == "redis":
        host, port = redis_url.split(":")
        redis.Redis(host=host, port=int(port), db=7).flushdb()
    s = open_backend(request.param, tmp_path, redis_url)
    s.backend = request.param  # type: ignore[attr-defined]
    yield s
    await s.close()


async def test_queues_deliver_in_order_and_disappear_when_empty(store: Store) -> None:
    ob = store.outbox
    assert ob.append([entry(A, "r1", 1), entry(B, "r1", 1)], now=10.0) == [
        Appended(True), Appended(True)]
    assert ob.append([entry(A, "r1", 2)], now=11.0) == [Appended(False)], "no wake-up needed"
    assert ob.append([entry(A, "r2", 1)], now=12.0) == [Appended(True)]
    assert sorted(await ob.destinations()) == [A, B]
    assert await ob.ready_keys(A, now=20.0, limit=10) == ["r1", "r2"], "longest-waiting first"
    assert await ob.ready_keys(A, now=20.0, limit=1) == ["r1"]
    assert await ob.ready_keys(A, now=5.0, limit=10) == [], "not before they were queued"

    head = await ob.claim(A, "r1", now=20.0, lease_until=50.0, owner="me")
    assert head is not None and head.event_id == "EV_r11" and head.attempts == 0
    assert head.body == entry(A, "r1", 1).body and head.created_at == 101.0
    assert head.enqueued_at == 10.0 and head.signing_key == "APIkey"
    assert await ob.claim(A, "r1", now=21.0, lease_until=60.0, owner="other") is None, "held"
    assert await ob.ready_keys(A, now=21.0, limit=10) == ["r2"]
    nxt = await ob.advance(head, lease_until=55.0)
    assert nxt is not None and nxt.event_id == "EV_r12"
    assert await ob.advance(nxt, lease_until=56.0) is None
    assert await ob.ready_keys(A, now=100.0, limit=10) == ["r2"], "the empty queue is gone"
    r2 = await ob.claim(A, "r2", now=100.0, lease_until=110.0, owner="me")
    assert r2 is not None
    assert await ob.advance(r2, lease_until=110.0) is None
    assert await ob.destinations() == [B]
    assert await ob.next_ready_at(A) is None
    assert (await ob.counts()).pending == {B: 1}


async def test_failed_attempt_backs_off_and_a_dead_holder_loses_its_lease(store: Store) -> None:
    ob = store.outbox
    ob.append([entry(A, "r", 1), entry(A, "r", 2)], now=10.0)
    head = await ob.claim(A, "r", now=10.0, lease_until=40.0, owner="p1")
    assert head is not None
    await ob.retry_later(head, "HTTP 503", ready_at=25.0)
    assert await ob.next_ready_at(A) == 25.0
    assert await ob.claim(A, "r", now=24.0, lease_until=60.0, owner="p1") is None, "backing off"
    again = await ob.claim(A, "r", now=25.0, lease_until=60.0, owner="p1")
    assert again is not None and again.event_id == head.event_id
    assert again.attempts == 1 and again.last_error == "HTTP 503"
    # p1 dies holding the queue: nobody may take it before the lease ends, anyone after
    assert await ob.claim(A, "r", now=59.0, lease_until=90.0, owner="p2") is None
    taken = await ob.claim(A, "r", now=60.0, lease_until=90.0, owner="p2")
    assert taken is not None and taken.event_id == head.event_id


async def test_release_and_retry_now(store: Store) -> None:
    ob = store.outbox
    ob.append([entry(A, "held", 1), entry(A, "waiting", 1), entry(A, "other", 1)], now=10.0)
    assert await ob.claim(A, "held", now=10.0, lease_until=1000.0, owner="p1") is not None
    w = await ob.claim(A, "waiting", now=10.0, lease_until=1000.0, owner="p1")
    assert w is not None
    await ob.retry_later(w, "timeout", ready_at=500.0)
    assert await ob.claim(A, "other", now=10.0, lease_until=1000.0, owner="p2") is not None

    assert await ob.retry_now(A, now=20.0) == 1, "only the queue waiting out a backoff"
    assert await ob.ready_keys(A, now=20.0, limit=10) == ["waiting"]
    assert await ob.release("p1", now=30.0) == 1
    assert sorted(await ob.ready_keys(A, now=30.0, limit=10)) == ["held", "waiting"]
    assert await ob.release(None, now=40.0) == 1, "every holder (a restart of the only server)"
    assert sorted(await ob.ready_keys(A, now=40.0, limit=10)) == ["held", "other", "waiting"]


async def test_dead_letters_and_redelivery_to_their_place(store: Store) -> None:
    ob = store.outbox
    ob.append([entry(A, "r", 1), entry(A, "r", 2), entry(A, "r", 3)], now=10.0)
    head = await ob.claim(A, "r", now=10.0, lease_until=40.0, owner="p")
    assert head is not None
    nxt = await ob.dead_letter(head, "HTTP 400", now=11.0, lease_until=40.0)
    assert nxt is not None and nxt.event_id == "EV_r2", "the queue moves on"
    dead = await ob.dead(10)
    assert [(d.event_id, d.attempts, d.last_error, d.died_at) for d in dead] == [
        ("EV_r1", 1, "HTTP 400", 11.0)]
    assert dead[0].body == head.body
    counts = await ob.counts()
    assert counts.pending == {A: 2} and counts.dead == {A: 1}
    assert [p.event_id for p in await ob.pending(10)] == ["EV_r2", "EV_r3"]

    await ob.retry_later(nxt, "HTTP 503", ready_at=500.0)
    assert await ob.redeliver(now=100.0) == 1
    assert await ob.dead(10) == []
    assert [p.event_id for p in await ob.pending(10)] == ["EV_r1", "EV_r2", "EV_r3"], \
        "back at its original place"
    back = await ob.claim(A, "r", now=100.0, lease_until=140.0, owner="p")
    assert back is not None and back.event_id == "EV_r1"
    assert back.attempts == 0 and back.enqueued_at == 100.0, "a fresh retry window"
    assert await ob.redeliver(now=100.0, seqs=[back.seq]) == 0, "only dead letters move"


async def test_outbox_survives_reopening(store: Store, tmp_path: Path, redis_url: str) -> None:
    ob = store.outbox
    ob.append([entry(A, "r", 1), entry(A, "r", 2)], now=10.0)
    backend = store.backend  # type: ignore[attr-defined]
    again = open_backend(backend, tmp_path, redis_url)
    try:
        pending = await again.outbox.pending(10)
        assert [(p.event_id, p.body) for p in pending] == [
            ("EV_r1", entry(A, "r", 1).body), ("EV_r2", entry(A, "r", 2).body)]
    finally:
        await again.close()


async def test_senders_page_the_store(store: Store) -> None:
    """However much waits, a sender reads heads only, as many as it asks for."""
    ob = store.outbox
    ob.append([entry(A, "big", n) for n in range(2000)], now=10.0)
    ob.append([entry(A, f"room{n:03}", 0) for n in range(200)], now=11.0)
    assert len(await ob.ready_keys(A, now=20.0, limit=16)) == 16
    assert len(await ob.pending(25)) == 25
    assert (await ob.counts()).pending == {A: 2200}
    head = await ob.claim(A, "big", now=20.0, lease_until=60.0, owner="p")
    assert head is not None and head.event_id == "EV_big0"


async def test_take_claims_ready_queues_in_one_call(store: Store) -> None:
    ob = store.outbox
    ob.append([entry(A, "r1", 1), entry(A, "r1", 2), entry(A, "r2", 1), entry(A, "r3", 1)], now=10.0)
    heads, next_at = await ob.take(A, now=20.0, lease_until=50.0, owner="p", limit=2)
    assert [h.event_id for h in heads] == ["EV_r11", "EV_r21"]
    assert next_at == 50.0, "the earliest a queue not ready now can be taken (here: our leases)"
    heads, next_at = await ob.take(A, now=21.0, lease_until=51.0, owner="p", limit=10)
    assert [h.event_id for h in heads] == ["EV_r31"]
    assert await ob.take(A, now=22.0, lease_until=52.0, owner="q", limit=10) == ([], 50.0)
    assert await ob.take(B, now=22.0, lease_until=52.0, owner="q", limit=10) == ([], None)
    heads, _ = await ob.take(A, now=50.0, lease_until=90.0, owner="q", limit=10)
    assert [h.event_id for h in heads] == ["EV_r11", "EV_r21"], "leases ran out: taken over"


async def test_append_can_hand_a_new_queue_to_its_writer(store: Store) -> None:
    """The sender's fast path: the event that starts a queue is delivered from memory."""
    ob = store.outbox
    res = ob.append([entry(A, "r", 1), entry(B, "r", 1)], now=10.0, claim=[True, False],
                    owner="me", lease_until=40.0)
    assert res[0].new_queue and res[0].claimed_seq > 0
    assert res[1] == Appended(True, 0), "not asked to claim: left for the sender to take"
    assert await ob.ready_keys(A, now=39.0, limit=10) == [], "held by its writer"
    assert ob.append([entry(A, "r", 2)], now=11.0, claim=[True], owner="me",
                     lease_until=41.0) == [Appended(False)], "an existing queue is never handed out"
    pending = await ob.pending(10, A)
    assert pending[0].seq == res[0].claimed_seq
    # the writer delivers it and moves on, as if it had claimed the queue
    nxt = await ob.advance(pending[0], lease_until=45.0)
    assert nxt is not None and nxt.event_id == "EV_r2"
    assert await ob.release("me", now=20.0) == 1
    assert await ob.ready_keys(A, now=20.0, limit=10) == ["r"]
